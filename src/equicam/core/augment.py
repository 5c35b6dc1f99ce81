"""Intensity augmentation for training: the slice a network sees as from another scanner.

Spatial transforms (:mod:`equicam.core.transforms`) move the anatomy; these change its look,
each sequence of each slice on its own, so that a network cannot lean on one scanner's
contrast, noise or resolution: gamma, contrast and brightness, a smooth bias field, noise,
blur and a simulated low resolution along one in-plane axis. Inputs and outputs are
normalised slices (:mod:`equicam.core.preprocess`): brain z-scored, background exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from equicam.core.preprocess import CLIP


@dataclass(frozen=True)
class IntensityAugment:
    """How often and how strongly each change is drawn.

    Attributes
    ----------
    p
        Probability of each change, drawn per slice and sequence.
    gamma
        Range of the gamma exponent applied to the brain's intensity range.
    contrast, brightness
        Range of the scale, and the largest shift in z units.
    bias
        Largest half-amplitude of the multiplicative bias field.
    noise
        Largest noise sd in z units.
    blur
        Range of the Gaussian blur sd, pixels.
    low_res
        Range of the down-sampling factor along one in-plane axis.
    """

    p: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    contrast: tuple[float, float] = (0.75, 1.25)
    brightness: float = 0.3
    bias: float = 0.3
    noise: float = 0.15
    blur: tuple[float, float] = (0.5, 1.2)
    low_res: tuple[float, float] = (1.5, 3.0)


def _uniform(generator, shape, low, high, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator).to(device)


def _masked_moments(x: torch.Tensor, brain: torch.Tensor):
    count = brain.sum(dim=(2, 3), keepdim=True).clamp_min(1)
    mean = (x * brain).sum(dim=(2, 3), keepdim=True) / count
    var = ((x - mean) ** 2 * brain).sum(dim=(2, 3), keepdim=True) / count
    return mean, var.sqrt().clamp_min(1e-3)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur every ``(n, c)`` plane with its own sd ``sigma`` ``(N, C, 1, 1)``."""
    radius = 3
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(offsets.view(1, 1, -1) ** 2) / (2 * sigma.view(-1, 1, 1) ** 2))
    kernel = kernel / kernel.sum(dim=-1, keepdim=True)  # (N*C, 1, 2r+1)
    n, c, h, w = x.shape
    planes = x.reshape(1, n * c, h, w)
    rows = F.conv2d(
        F.pad(planes, (radius, radius, 0, 0), mode="reflect"),
        kernel.view(n * c, 1, 1, -1),
        groups=n * c,
    )
    both = F.conv2d(
        F.pad(rows, (0, 0, radius, radius), mode="reflect"),
        kernel.view(n * c, 1, -1, 1),
        groups=n * c,
    )
    return both.reshape(n, c, h, w)


def _low_resolution(x: torch.Tensor, factor: float, axis: int) -> torch.Tensor:
    size = list(x.shape[-2:])
    small = list(size)
    small[axis] = max(4, round(size[axis] / factor))
    down = F.interpolate(x, size=small, mode="area")
    return F.interpolate(down, size=size, mode="bilinear", align_corners=False)


def augment_intensity(
    x: torch.Tensor, generator: torch.Generator, settings: IntensityAugment = IntensityAugment()
) -> torch.Tensor:
    """Change the look of every slice and sequence at random, keeping the anatomy in place.

    Parameters
    ----------
    x
        ``(N, M, S, S)`` normalised slices (background exactly 0).
    generator
        CPU source of every draw, so that a run is reproducible.
    settings
        Probabilities and ranges.

    Returns
    -------
    torch.Tensor
        ``(N, M, S, S)``, clipped to [-CLIP, CLIP], background exactly 0.
    """
    n, m, s, _ = x.shape
    dev, shape = x.device, (n, m, 1, 1)
    brain = (x != 0).to(x.dtype)
    out = x.float()

    def chosen() -> torch.Tensor:
        return torch.rand(shape, generator=generator).to(dev) < settings.p

    mean, std = _masked_moments(out, brain)
    # Gamma and bias reshape the histogram; the slice's mean and sd are restored after them.
    low = torch.where(brain > 0, out, torch.full_like(out, CLIP)).amin(dim=(2, 3), keepdim=True)
    high = out.amax(dim=(2, 3), keepdim=True)
    unit = ((out - low) / (high - low).clamp_min(1e-3)).clamp(0, 1)
    gamma = torch.exp(
        _uniform(generator, shape, *map(torch.log, map(torch.tensor, settings.gamma)), dev)
    )
    unit = torch.where(chosen(), unit.clamp_min(1e-6) ** gamma, unit)
    coarse = torch.randn((n, m, 3, 3), generator=generator).to(dev)
    field = F.interpolate(coarse, size=(s, s), mode="bicubic", align_corners=True)
    amplitude = _uniform(generator, shape, 0.0, settings.bias, dev)
    field = 1 + amplitude * field / field.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    unit = torch.where(chosen(), unit * field, unit)
    new_mean, new_std = _masked_moments(unit, brain)
    out = (unit - new_mean) / new_std * std + mean

    scale = _uniform(generator, shape, *settings.contrast, dev)
    shift = _uniform(generator, shape, -settings.brightness, settings.brightness, dev)
    out = torch.where(chosen(), out * scale + shift, out)
    sigma = _uniform(generator, shape, *settings.blur, dev)
    out = torch.where(chosen(), _gaussian_blur(out * brain, sigma), out)
    factor = float(_uniform(generator, (1,), *settings.low_res, "cpu"))
    axis = int(torch.randint(2, (1,), generator=generator))
    out = torch.where(chosen(), _low_resolution(out * brain, factor, axis), out)
    noise_sd = _uniform(generator, shape, 0.0, settings.noise, dev)
    noise = torch.randn(out.shape, generator=generator).to(dev) * noise_sd
    out = torch.where(chosen(), out + noise, out)
    out = out.clamp(-CLIP, CLIP) * brain
    return out.to(x.dtype)
