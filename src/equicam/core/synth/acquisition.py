"""What a real acquisition adds to the ideal signal, in the order a scanner and BraTS add it.

1. the point-spread of the read-out (a slight in-plane blur);
2. misregistration left after BraTS co-registers every sequence to T1ce (a small shift);
3. 2-D sequences are acquired in thick slices, in any of the three directions, and BraTS
   resamples them to 1 mm: the volume is averaged over slabs of the slice thickness, noise is
   added on that native grid, and the slabs are interpolated back (blur and correlated noise
   along one axis);
4. Rician magnitude noise at the sequence's SNR [GP95] (Gudbjartsson & Patz, MRM 1995);
5. a smooth multiplicative receive bias field [BW], which scales signal and noise alike;
6. imperfect skull stripping (a rim of dura and CSF left in places, cortex cut in others) and
   an arbitrary scanner intensity scale.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from equicam.core.mask_edit import distance_to
from equicam.core.synth.fields import smooth_field
from equicam.core.synth.sequences import Protocol


def _thick_noisy(
    rng: np.random.Generator, volume: np.ndarray, axis: int, n: int, sigma: float
) -> np.ndarray:
    """Average slabs of ``n`` voxels along ``axis``, add Rician noise, interpolate back."""
    length = volume.shape[axis]
    blocks = -(-length // n)
    pad = [(0, 0)] * 3
    pad[axis] = (0, blocks * n - length)
    moved = np.moveaxis(np.pad(volume, pad, mode="edge"), axis, 0)
    slabs = moved.reshape(blocks, n, *moved.shape[1:]).mean(axis=1)
    slabs = _rician(rng, slabs, sigma)
    # Slab b's centre lies at voxel (b + 0.5) n - 0.5; interpolate linearly between centres.
    position = np.clip((np.arange(length) + 0.5) / n - 0.5, 0, blocks - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, blocks - 1)
    weight = (position - low).astype(np.float32).reshape(-1, 1, 1)
    out = slabs[low] * (1 - weight) + slabs[high] * weight
    return np.moveaxis(out, 0, axis)


def _rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.hypot(real, imaginary)


def acquire(
    rng: np.random.Generator,
    ideal: np.ndarray,
    brain: np.ndarray,
    protocol: Protocol,
    *,
    mm: float,
    shift_mm: float,
    bias: float,
) -> np.ndarray:
    """Turn a noise-free signal volume into what the scanner and resampling deliver.

    Parameters
    ----------
    rng
        Random generator.
    ideal
        float32 noise-free signal on the output grid.
    brain
        The brain mask (sets the reference signal for the SNR).
    protocol
        The sequence's parameters (thickness and SNR are used here).
    mm
        Voxel size of the output grid, mm.
    shift_mm
        Largest misregistration, mm (0 for the reference sequence).
    bias
        Half-amplitude of the bias field (0.2: 0.80-1.20).

    Returns
    -------
    numpy.ndarray
        float32 magnitude image on the output grid, background not yet masked.
    """
    volume = ndimage.gaussian_filter(ideal, (0.5 / mm, 0.5 / mm, 0.0))
    if shift_mm > 0:
        shift = rng.uniform(-shift_mm, shift_mm, size=3) / mm
        volume = ndimage.shift(volume, shift, order=1, mode="nearest")
    sigma = float(volume[brain].mean()) / protocol.snr
    n = round(protocol.thickness / mm)
    if n >= 2:
        axis = int(rng.choice(3, p=(0.1, 0.1, 0.8)))  # axial (file axis 2) most often
        volume = _thick_noisy(rng, volume, axis, n, sigma)
    else:
        volume = _rician(rng, volume, sigma)
    field = smooth_field(rng, volume.shape, 3)
    field *= bias / max(1e-6, float(np.abs(field).max()))
    return (volume * (1.0 + field)).astype(np.float32)


def stripped_mask(
    rng: np.random.Generator, brain: np.ndarray, depth: np.ndarray, mm: float, residue: float
):
    """The skull-stripping mask BraTS would ship, and the rim it left outside the brain.

    With probability ``residue``, a rim up to 2-4 mm wide survives in places; in places the
    outer 1-2 mm of cortex are cut as well. ``depth`` is the distance (mm) of each brain voxel
    to the brain's surface.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The mask and the rim (both bool).
    """
    shape = brain.shape
    outside = distance_to(brain, (mm,) * 3, 4.0)
    inside = depth
    rim = np.zeros(shape, bool)
    if rng.random() < residue:
        width = rng.uniform(2.0, 4.0)
        rim = (outside > 0) & (outside <= width) & (smooth_field(rng, shape, 8) > 0.5)
    cut = (inside > 0) & (inside <= rng.uniform(1.0, 2.0)) & (smooth_field(rng, shape, 8) > 1.2)
    return (brain | rim) & ~cut, rim
