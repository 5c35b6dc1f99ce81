"""Fields over the grid: smooth random fields (deformations, textures, bias, shapes) and
short-range distances."""

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


def distance_within(mask: np.ndarray, mm: float, reach: float) -> np.ndarray:
    """Distance in mm from each voxel to the nearest voxel of ``mask``, exact up to ``reach``.

    Computed in the bounding box of ``mask`` grown by ``reach`` (a small fraction of the
    volume for ventricles or a brain's rim); voxels outside that box get ``inf``.
    """
    out = np.full(mask.shape, np.inf, np.float32)
    found = np.argwhere(mask)
    if not len(found):
        return out
    grow = int(np.ceil(reach / mm)) + 1
    box = tuple(
        slice(max(0, lo - grow), min(n, hi + grow + 1))
        for lo, hi, n in zip(found.min(axis=0), found.max(axis=0), mask.shape, strict=True)
    )
    out[box] = ndimage.distance_transform_edt(~mask[box]) * mm
    return out
