"""Segmentation metrics in 3-D: Dice and average symmetric surface distance (mm)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two boolean volumes; 1.0 when both are empty."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(pred, truth).sum() / total)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))


def assd(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance in mm.

    Surfaces are the mask voxels with a 6-connected background neighbour; distances use the
    voxel ``spacing``. Both empty: 0. Exactly one empty: the volume's diagonal in mm, a finite
    worst case (as challenge rankings do) so that means and JSON stay valid.
    """
    pred, truth = pred.astype(bool), truth.astype(bool)
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return float(np.linalg.norm(np.array(pred.shape) * np.asarray(spacing, float)))
    s_pred, s_truth = _surface(pred), _surface(truth)
    to_truth = ndimage.distance_transform_edt(~s_truth, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~s_pred, sampling=spacing)
    distances = np.concatenate([to_truth[s_pred], to_pred[s_truth]])
    return float(distances.mean())
