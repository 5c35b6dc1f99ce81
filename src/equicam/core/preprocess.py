"""Intensity preprocessing shared by training (``equicam prepare``) and inference.

One normalisation, used everywhere: per case and per modality, z-score inside the brain,
clipped to [-5, 5], background exactly 0. MRI intensities have no absolute scale, so the
statistics come from the brain of the same case; the clip keeps rare bright voxels (vessels,
artefacts) from dominating a slice. A network may in addition re-standardise each slice
(:func:`zscore_slices`, the paper's per-slice normalisation); it does so inside its forward
pass, so that training and every inference path see the same inputs.

Optionally (:func:`bias_field`), each volume is first divided by a smooth multiplicative field
fitted to it, the receive-coil inhomogeneity that lifts whole regions of a scan, cortex
included, by tens of percent.
"""

from __future__ import annotations

import numpy as np

NORMALISATION = "zscore-brain-clip5"
CLIP = 5.0
# The degree of the bias-field correction, chosen on patients outside every test set
# (docs/results/bias_correction/degree_dev700.md).
BIAS_DEGREE = 2


def brain_mask(images: dict[str, np.ndarray]) -> np.ndarray:
    """Voxels inside the (skull-stripped) brain: non-zero in any modality.

    Parameters
    ----------
    images
        Modality -> volume, all of one shape.

    Returns
    -------
    numpy.ndarray
        Boolean array of that shape.
    """
    volumes = iter(images.values())
    mask = next(volumes) != 0
    for volume in volumes:
        mask |= volume != 0
    return mask


def normalise_volume(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-score a volume with the mean and std of its voxels inside ``mask``.

    Parameters
    ----------
    volume
        Intensities, any shape.
    mask
        Boolean brain mask of the same shape.

    Returns
    -------
    numpy.ndarray
        float32, clipped to [-CLIP, CLIP], exactly 0 outside the mask.
    """
    out = np.zeros(volume.shape, dtype=np.float32)
    inside = volume[mask].astype(np.float64)
    if inside.size == 0:
        return out
    std = inside.std()
    out[mask] = np.clip((inside - inside.mean()) / (std if std > 0 else 1.0), -CLIP, CLIP)
    return out


def bias_field(
    volume: np.ndarray, mask: np.ndarray, degree: int = BIAS_DEGREE, samples: int = 60_000
) -> np.ndarray:
    """A smooth multiplicative field of ``volume``, fitted inside ``mask``.

    The log intensity of (a fixed sample of) the brain's voxels is fitted by a 3-D polynomial
    of total degree ``degree`` in the voxel coordinates, by least squares repeated four times,
    each time without the voxels that lie more than 1.5 standard deviations from the fit: a
    tumour, CSF and the contrast between tissues are left to the image, the slow variation
    across the brain goes into the field (surface fitting, as in retrospective intensity
    non-uniformity correction; Vovk et al., IEEE TMI 2007, review it).

    Parameters
    ----------
    volume
        Intensities ``(Z, Y, X)`` (any axis order), positive inside ``mask``.
    mask
        Boolean brain mask of the same shape.
    degree
        Total degree of the polynomial (2: 10 terms).
    samples
        Brain voxels the fit uses, drawn with a fixed seed (the result is deterministic).

    Returns
    -------
    numpy.ndarray
        float32 field of the volume's shape, geometric mean 1 over ``mask``, 1 outside it.
    """
    field = np.ones(volume.shape, np.float32)
    brain = np.nonzero(mask)
    count = len(brain[0])
    if count < 100:
        return field
    pick = np.sort(np.random.default_rng(0).choice(count, min(samples, count), replace=False))
    powers = [
        (i, j, k)
        for i in range(degree + 1)
        for j in range(degree + 1 - i)
        for k in range(degree + 1 - i - j)
    ]
    # Coordinates in [-1, 1] of every brain voxel: the fit uses the sample, the field all.
    z, y, x = (np.linspace(-1.0, 1.0, n)[at] for n, at in zip(volume.shape, brain, strict=True))
    design = np.stack([z[pick] ** i * y[pick] ** j * x[pick] ** k for i, j, k in powers], axis=1)
    log = np.log(np.maximum(volume[tuple(at[pick] for at in brain)].astype(np.float64), 1e-6))
    keep = np.ones(len(log), bool)
    for _ in range(4):
        coef = np.linalg.lstsq(design[keep], log[keep], rcond=None)[0]
        residual = log - design @ coef
        centre, spread = np.median(residual[keep]), residual[keep].std()
        keep = np.abs(residual - centre) < 1.5 * max(spread, 1e-6)
    fit = np.zeros(count, np.float64)
    for c, (i, j, k) in zip(coef, powers, strict=True):
        fit += c * (z**i * y**j) * x**k
    fit -= fit.mean()
    field[mask] = np.exp(fit)
    return field


def normalise_images(images: dict[str, np.ndarray], bias_degree: int = 0) -> dict[str, np.ndarray]:
    """Every volume of a case normalised with :func:`normalise_volume` inside the brain that
    the volumes together show (:func:`brain_mask`): the networks' input.

    Parameters
    ----------
    images
        Modality -> volume, all of one shape.
    bias_degree
        Divide each volume by its :func:`bias_field` of this degree first (0, the default:
        no correction; the correction's own degree is :data:`BIAS_DEGREE`).

    Returns
    -------
    dict
        Modality -> float32 volume.
    """
    brain = brain_mask(images)
    if bias_degree:
        images = {m: v / bias_field(v, brain, bias_degree) for m, v in images.items()}
    return {m: normalise_volume(v, brain) for m, v in images.items()}


def zscore_slices(x, std_floor: float = 0.1):
    """Z-score every slice with the mean and std of its own brain pixels (the non-zero ones).

    Parameters
    ----------
    x
        torch tensor ``(N, C, H, W)``, exactly 0 outside the brain.
    std_floor
        Smallest std divided by, so that a slice with a few near-constant brain pixels (the
        top of the head) is not blown up.

    Returns
    -------
    torch.Tensor
        ``(N, C, H, W)``: brain pixels z-scored per slice and clipped to [-CLIP, CLIP],
        background exactly 0.
    """
    import torch

    brain = x != 0
    count = brain.sum(dim=(2, 3), keepdim=True).clamp_min(1)
    mean = x.sum(dim=(2, 3), keepdim=True) / count
    var = ((x - mean) ** 2 * brain).sum(dim=(2, 3), keepdim=True) / count
    z = ((x - mean) / var.sqrt().clamp_min(std_floor)).clamp(-CLIP, CLIP)
    return torch.where(brain, z, torch.zeros_like(z))


def _square_pads(y: int, x: int) -> tuple[int, int, int, int]:
    side = max(y, x)
    top, left = (side - y) // 2, (side - x) // 2
    return top, side - y - top, left, side - x - left


def to_input(slices, size: int, *, nearest: bool = False):
    """Pad slices to a centred square with zeros and resize them to the network's input.

    Parameters
    ----------
    slices
        torch tensor ``(N, C, Y, X)``.
    size
        Side of the network input.
    nearest
        Nearest-neighbour (masks) instead of antialiased bilinear (images).

    Returns
    -------
    torch.Tensor
        ``(N, C, size, size)``.
    """
    from torch.nn import functional as F

    top, bottom, left, right = _square_pads(*slices.shape[-2:])
    if top or bottom or left or right:
        slices = F.pad(slices, (left, right, top, bottom))
    if slices.shape[-1] == size:
        return slices
    if nearest:
        return F.interpolate(slices, size=(size, size), mode="nearest")
    return F.interpolate(
        slices, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


def from_input(maps, shape: tuple[int, int]):
    """Inverse of :func:`to_input` for maps: ``(N, C, S, S) -> (N, C, Y, X)`` (bilinear)."""
    from torch.nn import functional as F

    y, x = shape
    side = max(y, x)
    if maps.shape[-1] != side:
        maps = F.interpolate(maps, size=(side, side), mode="bilinear", align_corners=False)
    top, _, left, _ = _square_pads(y, x)
    return maps[..., top : top + y, left : left + x]
