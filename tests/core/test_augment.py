"""Intensity augmentation: the look changes, the anatomy and the background do not."""

import torch

from equicam.core.augment import IntensityAugment, augment_intensity
from equicam.core.preprocess import CLIP


def _slices() -> torch.Tensor:
    """Two slices, four sequences: a disc of brain (z-scored) with a bright blob, zero outside."""
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    brain = ((yy - 24) ** 2 + (xx - 24) ** 2) < 20**2
    blob = torch.exp(-((yy - 18) ** 2 + (xx - 28) ** 2) / 20)
    x = torch.randn(2, 4, 48, 48, generator=torch.Generator().manual_seed(0)) * 0.3 + 3 * blob
    return torch.where(brain, x, torch.zeros_like(x)), brain


def test_background_stays_exactly_zero_and_values_stay_clipped():
    x, brain = _slices()
    out = augment_intensity(x, torch.Generator().manual_seed(1), IntensityAugment(p=1.0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.all(out[:, :, ~brain] == 0)
    assert out.abs().max() <= CLIP


def test_probability_zero_changes_nothing_and_one_changes_every_slice():
    x, _ = _slices()
    same = augment_intensity(x, torch.Generator().manual_seed(1), IntensityAugment(p=0.0))
    torch.testing.assert_close(same, x, atol=1e-4, rtol=1e-4)
    moved = augment_intensity(x, torch.Generator().manual_seed(1), IntensityAugment(p=1.0))
    assert ((moved - x).abs().flatten(2).mean(dim=2) > 0.05).all()


def test_same_seed_same_draw_and_sequences_change_independently():
    x, _ = _slices()
    a = augment_intensity(x, torch.Generator().manual_seed(4), IntensityAugment(p=0.5))
    b = augment_intensity(x, torch.Generator().manual_seed(4), IntensityAugment(p=0.5))
    assert torch.equal(a, b)
    change = (a - x).abs().flatten(2).mean(dim=2)
    assert len({round(float(c), 4) for c in change.flatten()}) > 1


def test_the_anatomy_stays_in_place():
    """The bright blob is still brightest where it was, whatever the look."""
    x, _ = _slices()
    for seed in range(5):
        out = augment_intensity(x, torch.Generator().manual_seed(seed), IntensityAugment(p=1.0))
        for plane in out.reshape(-1, 48, 48):
            y, x_ = divmod(int(plane.argmax()), 48)
            assert abs(y - 18) <= 3 and abs(x_ - 28) <= 3


def test_a_larger_bias_setting_moves_the_same_draw_further():
    """The draws do not depend on the ranges, so only the bias field's amplitude differs."""
    x, _ = _slices()

    def with_bias(bias: float) -> torch.Tensor:
        settings = IntensityAugment(p=1.0, bias=bias)
        return augment_intensity(x, torch.Generator().manual_seed(2), settings)

    flat = with_bias(0.0)
    moved = [float((with_bias(b) - flat).abs().mean()) for b in (0.3, 0.6)]
    assert 0 < moved[0] < moved[1]
