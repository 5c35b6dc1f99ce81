"""Segmentation metrics in 3-D: Dice, and surface distances in mm (ASSD and HD95).

Surfaces are the mask voxels with a 6-connected neighbour outside the mask (the array's edge
counts as outside), as in medpy. The two directed surface distances are, for every surface
voxel of one mask, the Euclidean distance (with the voxel spacing) to the nearest surface
voxel of the other mask. From them:

- ASSD, the average symmetric surface distance: the mean of both sets pooled;
- HD95, the 95th percentile of both sets pooled (medpy's ``hd95``: linear interpolation
  between order statistics, ``numpy.percentile``'s default). It is not the maximum of the
  two directed 95th percentiles, which some toolkits report.

Both empty: 0. Exactly one empty: the diagonal of the volume in mm, a finite worst case (no
surface to measure to), so that means and JSON stay valid.

Nearest surface voxels are found with k-d trees over the surface voxels (coordinates in mm):
the same distances as medpy's Euclidean distance transforms, at a cost that grows with the
surfaces rather than the volume. A reference mask (:class:`SurfaceReference`) is prepared once
and serves every prediction compared with it.
"""

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


def _bounding_box(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """The smallest box holding every true voxel, grown by ``margin`` where the array allows."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(hits[0] - margin, 0), min(hits[-1] + 1 + margin, mask.shape[axis])))
    return tuple(box)


def surface_points(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Surface voxels of a non-empty mask as ``(K, 3)`` coordinates in mm.

    The erosion runs on the mask's bounding box grown by one voxel, which leaves its view of
    the outside unchanged (the array's edge is outside either way).
    """
    box = _bounding_box(mask)
    inner = mask[box]
    eroded = ndimage.binary_erosion(inner, structure=ndimage.generate_binary_structure(3, 1))
    points = np.argwhere(inner & ~eroded).astype(np.float64)
    points += [s.start for s in box]
    points *= np.asarray(spacing, np.float64)
    return points


class SurfaceReference:
    """The surface of a reference mask, ready to be compared with many predictions.

    Parameters
    ----------
    truth
        ``(Z, Y, X)`` mask (non-zero = inside).
    spacing
        ``(dz, dy, dx)`` voxel size in mm.
    """

    def __init__(self, truth: np.ndarray, spacing: Sequence[float]) -> None:
        from scipy.spatial import cKDTree

        truth = np.asarray(truth).astype(bool, copy=False)
        if len(spacing) != truth.ndim:
            raise ValueError(f"mask {truth.shape} with spacing {tuple(spacing)} do not match")
        self.shape = truth.shape
        self.spacing = tuple(float(s) for s in spacing)
        self.empty = not truth.any()
        self.points = None if self.empty else surface_points(truth, self.spacing)
        self.tree = None if self.empty else cKDTree(self.points, balanced_tree=False)

    def worst(self) -> float:
        """The diagonal of the volume in mm: the score when exactly one mask is empty."""
        return float(np.linalg.norm(np.array(self.shape) * np.asarray(self.spacing)))

    def scores(self, pred: np.ndarray) -> dict[str, float]:
        """``{"assd": ..., "hd95": ...}`` of the mask ``pred`` against the reference, in mm."""
        from scipy.spatial import cKDTree

        pred = np.asarray(pred).astype(bool, copy=False)
        if pred.shape != self.shape:
            raise ValueError(
                f"masks {pred.shape} and {self.shape} with spacing {self.spacing} do not match"
            )
        if self.empty or not pred.any():
            value = 0.0 if self.empty and not pred.any() else self.worst()
            return {"assd": value, "hd95": value}
        points = surface_points(pred, self.spacing)
        pooled = np.concatenate(
            [
                self.tree.query(points, k=1)[0],
                cKDTree(points, balanced_tree=False).query(self.points, k=1)[0],
            ]
        )
        return {"assd": float(pooled.mean()), "hd95": float(np.percentile(pooled, 95))}


def assd(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance in mm (see the module docstring).

    Parameters
    ----------
    pred, truth
        ``(Z, Y, X)`` masks (non-zero = inside), of one shape.
    spacing
        ``(dz, dy, dx)`` voxel size in mm.
    """
    return SurfaceReference(truth, spacing).scores(pred)["assd"]


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """95th percentile of both directed surface distances pooled, in mm (medpy's ``hd95``).

    Parameters are those of :func:`assd`; empty masks are scored as there.
    """
    return SurfaceReference(truth, spacing).scores(pred)["hd95"]
