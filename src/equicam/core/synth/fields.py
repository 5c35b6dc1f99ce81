"""Smooth random fields, the raw material of deformations, textures, bias and shapes."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> np.ndarray:
    """Zero-mean, unit-std random field that varies over about ``max(shape) / cells`` voxels.

    Parameters
    ----------
    rng
        Random generator (the field is a deterministic function of its state).
    shape
        Output shape.
    cells
        Number of independent values along the longest axis.

    Returns
    -------
    numpy.ndarray
        float32 array of ``shape``.
    """
    coarse = rng.standard_normal(tuple(max(2, round(cells * s / max(shape))) for s in shape))
    # Cubic interpolation on a quarter-resolution grid, then linear: smooth and fast.
    quarter = tuple(max(c, s // 4) for s, c in zip(shape, coarse.shape, strict=True))
    up = [q / c for q, c in zip(quarter, coarse.shape, strict=True)]
    field = ndimage.zoom(coarse, up, order=3)
    field = ndimage.zoom(
        field.astype(np.float32), [s / q for s, q in zip(shape, field.shape, strict=True)], order=1
    )
    field = field[tuple(slice(0, s) for s in shape)]
    return ((field - field.mean()) / (field.std() + 1e-6)).astype(np.float32)
