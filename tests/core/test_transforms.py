"""The spatial transform A: reproducible, identical on every tensor, invertible."""

import pytest
import torch

from equicam.core.transforms import (
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


@pytest.mark.parametrize("kind", KINDS)
def test_one_transform_moves_images_and_maps_identically(kind):
    t = SpatialTransform(kind, shift=(0.1, 0.2), size=24)
    image = torch.zeros(1, 1, 16, 16)
    image[0, 0, 5, 3] = 1.0
    cam = image.clone() * 7
    moved_image, moved_cam = apply_transform(image, t), apply_transform(cam, t)
    torch.testing.assert_close(moved_cam, moved_image * 7)
    assert apply_transform(image, t, mode="nearest").shape == moved_image.shape
