"""The spatial transform A: reproducible, identical on every tensor, invertible."""

import pytest
import torch

from equicam.core.transforms import (
    FAMILIES,
    KINDS,
    SpatialTransform,
    apply_transform,
    invert_transform,
    sample_transform,
)


@pytest.mark.parametrize("kind", ["hflip", "vflip", "rot90", "rot180", "rot270"])
def test_flips_and_rotations_round_trip_exactly(kind):
    x = torch.randn(2, 3, 16, 16)
    t = SpatialTransform(kind)
    moved = apply_transform(x, t)
    assert not torch.equal(moved, x)
    assert torch.equal(apply_transform(moved, invert_transform(t, 16)), x)


def test_rot90_four_times_is_the_identity():
    x = torch.randn(1, 1, 8, 8)
    out = x
    for _ in range(4):
        out = apply_transform(out, SpatialTransform("rot90"))
    assert torch.equal(out, x)


def test_translation_round_trips_on_the_region_that_stays_in_view():
    x = torch.randn(1, 1, 20, 20)
    t = SpatialTransform("translate", shift=(0.2, -0.1))  # 4 rows down, 2 columns left
    back = apply_transform(apply_transform(x, t), invert_transform(t, 20))
    torch.testing.assert_close(back[..., :16, 2:], x[..., :16, 2:])
    assert torch.all(back[..., 16:, :] == 0) and torch.all(back[..., :, :2] == 0)


def test_rescale_round_trips_a_smooth_image_closely_and_keeps_multiples_of_8():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    x = torch.sin(3 * yy + 2 * xx)[None, None]
    t = SpatialTransform("rescale", size=40)
    assert apply_transform(x, t).shape == (1, 1, 40, 40)
    back = apply_transform(apply_transform(x, t), invert_transform(t, 32))
    assert (back - x)[..., 2:-2, 2:-2].abs().max() < 0.05
    sizes = {sample_transform(torch.Generator().manual_seed(s), 96).size for s in range(200)}
    sizes.discard(None)
    assert sizes and all(s % 8 == 0 and 72 <= s <= 120 for s in sizes)


def test_same_seed_same_transform_and_every_kind_is_drawn():
    draws = [sample_transform(torch.Generator().manual_seed(3), 64) for _ in range(2)]
    assert draws[0] == draws[1]
    generator = torch.Generator().manual_seed(0)
    kinds = {sample_transform(generator, 64).kind for _ in range(300)}
    assert kinds == set(KINDS)
    shifts = [sample_transform(torch.Generator().manual_seed(s), 64) for s in range(300)]
    assert all(abs(v) <= 0.3 for t in shifts for v in t.shift)


def test_families_are_drawn_uniformly_and_a_rescale_is_never_the_identity():
    """As the authors draw A: flip, rotation, translation or rescale, a quarter each."""
    family = {"hflip": "flip", "vflip": "flip", "translate": "translation", "rescale": "rescale"}
    generator = torch.Generator().manual_seed(1)
    draws = [sample_transform(generator, 64) for _ in range(4000)]
    counts = dict.fromkeys(FAMILIES, 0)
    for t in draws:
        counts[family.get(t.kind, "rotation")] += 1
    for f, n in counts.items():
        assert abs(n / len(draws) - 0.25) < 0.03, (f, n)
    assert all(t.size != 64 for t in draws if t.kind == "rescale")


# Where a delta at (row 5, column 3) of a 16 x 16 slice lands; rescale is to 24 x 24.
LANDING = {
    "hflip": (5, 12),  # columns mirrored
    "vflip": (10, 3),  # rows mirrored
    "rot90": (12, 5),  # counter-clockwise
    "rot180": (10, 12),
    "rot270": (3, 10),
    "translate": (7, 6),  # shift (0.1, 0.2) of 16 pixels: 2 rows down, 3 columns right
    "rescale": (8, 5),  # pixel centres scale by 24 / 16
}


@pytest.mark.parametrize("kind", KINDS)
def test_one_transform_moves_images_and_maps_identically(kind):
    """Images (N, 1, H, W) and CAMs (N, 2, H, W) land on the same pixel under one A."""
    t = SpatialTransform(kind, shift=(0.1, 0.2), size=24)
    image = torch.zeros(2, 1, 16, 16)
    image[:, 0, 5, 3] = 1.0
    cam = torch.zeros(2, 2, 16, 16)
    cam[:, 0, 5, 3] = 3.0
    cam[:, 1, 5, 3] = 7.0
    for moved in (apply_transform(image, t), apply_transform(cam, t)):
        side = moved.shape[-1]
        for channel in moved.reshape(-1, side * side):
            assert divmod(int(channel.argmax()), side) == LANDING[kind]
    nearest = apply_transform(image, t, mode="nearest")
    assert nearest.shape == apply_transform(image, t).shape
    assert set(nearest.unique().tolist()) <= {0.0, 1.0}, "nearest keeps mask values"


@pytest.mark.parametrize("seed", range(20))
def test_sampled_transforms_round_trip_on_smooth_input(seed):
    t = sample_transform(torch.Generator().manual_seed(seed), 32)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    x = torch.cos(2 * yy - xx)[None, None]
    moved = apply_transform(x, t)
    assert moved.shape[-1] % 8 == 0
    back = apply_transform(moved, invert_transform(t, 32))
    assert back.shape == x.shape
    kept = back != 0 if t.kind == "translate" else torch.ones_like(x, dtype=torch.bool)
    inner = torch.zeros_like(kept)
    inner[..., 2:-2, 2:-2] = True
    assert (back - x)[kept & inner].abs().max() < 0.05
