"""Segmentation metrics in 3-D: Dice and average symmetric surface distance (mm)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap ``2 |P & T| / (|P| + |T|)`` of two volumes (non-zero = inside).

    Both empty: 1.0 (perfect agreement on "no tumour").
    """
    pred, truth = pred.astype(bool), truth.astype(bool)
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with a 6-connected neighbour outside the mask (or outside the array)."""
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every true voxel, grown by one voxel where the array allows."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(hits[0] - 1, 0), hits[-1] + 2))
    return tuple(box)


def assd(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance in mm.

    The mean, over the surface voxels of both masks, of the Euclidean distance (with the
    voxel ``spacing``) to the nearest surface voxel of the other mask. Surfaces are the mask
    voxels with a 6-connected neighbour outside the mask, as in medpy.

    Both empty: 0. Exactly one empty: the diagonal of the volume in mm, a finite worst case
    (no surface to measure to), so that means and JSON stay valid.

    Parameters
    ----------
    pred, truth
        ``(Z, Y, X)`` masks (non-zero = inside), of one shape.
    spacing
        ``(dz, dy, dx)`` voxel size in mm.
    """
    pred, truth = pred.astype(bool), truth.astype(bool)
    if pred.shape != truth.shape or len(spacing) != pred.ndim:
        raise ValueError(
            f"masks {pred.shape} and {truth.shape} with spacing {tuple(spacing)} do not match"
        )
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return float(np.linalg.norm(np.array(pred.shape) * np.asarray(spacing, float)))
    # Every surface voxel of both masks lies in this box, so distances measured inside it are
    # exact; the one-voxel margin keeps the erosion's view of the outside unchanged.
    box = _bounding_box(pred | truth)
    pred, truth = pred[box], truth[box]
    s_pred, s_truth = _surface(pred), _surface(truth)
    to_truth = ndimage.distance_transform_edt(~s_truth, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~s_pred, sampling=spacing)
    distances = np.concatenate([to_truth[s_pred], to_pred[s_truth]])
    return float(distances.mean())
