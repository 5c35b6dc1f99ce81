"""Mask editing in physical units: growth in mm, components, holes, slice interpolation.

Pure numpy/scipy, used by the refinement protocols and by the plugin's correction tools.
Every function takes a 3-D mask (bool, or integer labels where any non-zero voxel is foreground)
and returns a new bool array of the same shape; the input is never modified. ``spacing`` is the
voxel size in mm along the array's three axes, in array order.

Connectivity: components are 26-connected (voxels touching by a face, an edge or a corner belong
together), so a thin oblique tumour extension is not cut into pieces.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

_FULL_3D = np.ones((3, 3, 3), dtype=bool)


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"a mask must be 3-D, got shape {mask.shape}")
    return mask != 0


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive sizes in mm, got {spacing}")
    return spacing


def distance_to(mask: np.ndarray, spacing: Sequence[float], within_mm: float) -> np.ndarray:
    """Distance in mm from each voxel centre to the nearest mask voxel, exact up to ``within_mm``.

    Only voxels within ``within_mm`` of the mask's bounding box are measured (farther ones are
    ``inf``), which makes growing a small mask in a large volume fast.

    Parameters
    ----------
    mask : np.ndarray
        3-D mask; if it is empty every distance is ``inf``.
    spacing : sequence of float
        Voxel size in mm along the array axes.
    within_mm : float
        Distances up to this are exact.

    Returns
    -------
    np.ndarray
        float64 distances, 0 inside the mask.
    """
    mask = _as_mask(mask)
    spacing = _check_spacing(spacing)
    out = np.full(mask.shape, np.inf)
    if not mask.any():
        return out
    box = []
    for axis, (n, size) in enumerate(zip(mask.shape, spacing, strict=True)):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        margin = int(np.ceil(within_mm / size)) + 1
        box.append(slice(max(hits[0] - margin, 0), min(hits[-1] + margin + 1, n)))
    box = tuple(box)
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing)
    return out


def grow(mask: np.ndarray, spacing: Sequence[float], mm: float) -> np.ndarray:
    """Add every voxel whose centre lies within ``mm`` of the mask (Euclidean, in mm).

    Parameters
    ----------
    mask : np.ndarray
        3-D mask.
    spacing : sequence of float
        Voxel size in mm along the array axes; anisotropic spacing is respected.
    mm : float
        Growth distance in mm; 0 returns the mask unchanged.

    Returns
    -------
    np.ndarray
        The grown mask (bool). An empty mask stays empty.
    """
    mask = _as_mask(mask)
    if mm < 0:
        raise ValueError(f"growth must be >= 0 mm, got {mm}")
    if mm == 0:
        _check_spacing(spacing)
        return mask.copy()
    return distance_to(mask, spacing, mm) <= mm


def shrink(mask: np.ndarray, spacing: Sequence[float], mm: float) -> np.ndarray:
    """Remove every voxel whose centre lies within ``mm`` of the background (Euclidean, in mm).

    Parameters
    ----------
    mask : np.ndarray
        3-D mask.
    spacing : sequence of float
        Voxel size in mm along the array axes.
    mm : float
        Shrink distance in mm; 0 returns the mask unchanged.

    Returns
    -------
    np.ndarray
        The shrunk mask (bool). Voxels outside the array count as background, so a mask that
        touches the array's edge shrinks from it too.
    """
    mask = _as_mask(mask)
    spacing = _check_spacing(spacing)
    if mm < 0:
        raise ValueError(f"shrinkage must be >= 0 mm, got {mm}")
    if mm == 0 or not mask.any():
        return mask.copy()
    padded = np.pad(mask, 1)
    inside = ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]
    return inside > mm


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The connected components of a mask, 26-connected in 3-D (``ndimage.label``'s labels
    and count): the components every function here works on."""
    return ndimage.label(mask, structure=_FULL_3D)


def remove_small_components(
    mask: np.ndarray, spacing: Sequence[float], min_mm3: float
) -> np.ndarray:
    """Drop connected components whose volume is under ``min_mm3`` cubic millimetres.

    Parameters
    ----------
    mask : np.ndarray
        3-D mask.
    spacing : sequence of float
        Voxel size in mm along the array axes (a voxel's volume is their product).
    min_mm3 : float
        Smallest volume kept, in mm³.

    Returns
    -------
    np.ndarray
        The mask without its small components (bool).
    """
    mask = _as_mask(mask)
    voxel_mm3 = float(np.prod(_check_spacing(spacing)))
    labels, count = label_components(mask)
    if count == 0:
        return mask
    sizes_mm3 = np.bincount(labels.ravel(), minlength=count + 1) * voxel_mm3
    keep = sizes_mm3 >= min_mm3
    keep[0] = False
    return keep[labels]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of the mask (bool; empty if the mask is empty)."""
    mask = _as_mask(mask)
    labels, count = label_components(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def strongest_component(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The connected component of the mask that holds the highest of ``values`` (bool; empty
    if the mask is empty). Of several that hold it (a fusion by maximum peaks at 1 wherever
    one sequence's map does), the one whose values sum highest."""
    mask = _as_mask(mask)
    if not mask.any():
        return mask
    labels, _ = label_components(mask)
    values = np.where(mask, values, -np.inf)
    peaks = np.unique(labels[values == values.max()])
    if peaks.size > 1:
        sums = ndimage.sum_labels(values, labels, peaks)
        peaks = peaks[[int(np.argmax(sums))]]
    return labels == peaks[0]


def keep_component_at(mask: np.ndarray, index: Sequence[int]) -> np.ndarray:
    """Keep only the connected component that contains the voxel ``index``.

    Parameters
    ----------
    mask : np.ndarray
        3-D mask.
    index : sequence of int
        The voxel (array indices) inside the component to keep, e.g. where the user clicked.

    Returns
    -------
    np.ndarray
        That component alone (bool).

    Raises
    ------
    ValueError
        If the index is outside the array or on a background voxel (nothing is discarded then).
    """
    mask = _as_mask(mask)
    index = tuple(int(i) for i in index)
    if len(index) != 3 or not all(0 <= i < n for i, n in zip(index, mask.shape, strict=True)):
        raise ValueError(f"voxel {index} is outside the mask of shape {mask.shape}")
    if not mask[index]:
        raise ValueError(f"voxel {index} is not part of the mask: no component to keep")
    labels, _ = label_components(mask)
    return labels == labels[index]


def fill_holes(mask: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Fill the holes of a mask: background regions that the mask encloses.

    Parameters
    ----------
    mask : np.ndarray
        3-D mask.
    axis : int or None
        None fills cavities enclosed in 3-D (a necrotic core inside a tumour shell). An axis fills
        each slice along it in 2-D instead, which also closes a hole that is open above or below
        (a ring drawn on one slice).

    Returns
    -------
    np.ndarray
        The filled mask (bool).
    """
    mask = _as_mask(mask)
    if axis is None:
        return ndimage.binary_fill_holes(mask)
    moved = np.moveaxis(mask, axis, 0)
    filled = np.stack([ndimage.binary_fill_holes(plane) for plane in moved])
    return np.moveaxis(filled, 0, axis)


def _signed_distance(plane: np.ndarray, sampling: tuple[float, float]) -> np.ndarray:
    """Signed distance of a 2-D mask: positive inside, negative outside, zero on the boundary."""
    inside = ndimage.distance_transform_edt(plane, sampling=sampling)
    outside = ndimage.distance_transform_edt(~plane, sampling=sampling)
    return inside - outside


def interpolate_slices(
    mask: np.ndarray,
    axis: int,
    slices: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Fill the slices between drawn slices by shape-based interpolation.

    Between two consecutive key slices along ``axis``, each slice in between becomes the zero
    level set of the signed distance maps of the two key slices, blended linearly by position:
    a disc of radius 10 and one of radius 20 five slices apart give discs of radius 12, 14, ...
    Overlapping shapes slide from one to the other; shapes that do not overlap vanish midway
    (draw another key slice between them).

    Parameters
    ----------
    mask : np.ndarray
        3-D mask.
    axis : int
        The slice axis (2 for axial slices of a BraTS volume).
    slices : sequence of int or None
        The key slices (e.g. the ones the user drew); each must contain foreground. None takes
        every slice that contains foreground.
    spacing : sequence of float or None
        Voxel size in mm along the three array axes; only the in-plane sizes matter (the
        distance maps are in mm). None means isotropic.

    Returns
    -------
    np.ndarray
        The mask with the slices strictly between key slices replaced (bool); key slices and
        slices outside the first and last key are unchanged.
    """
    mask = _as_mask(mask)
    axis = axis % 3
    spacing = (1.0, 1.0, 1.0) if spacing is None else _check_spacing(spacing)
    in_plane = tuple(s for i, s in enumerate(spacing) if i != axis)
    moved = np.moveaxis(mask, axis, 0)
    if slices is None:
        keys = [int(i) for i in np.flatnonzero(moved.reshape(len(moved), -1).any(axis=1))]
    else:
        keys = sorted({int(i) for i in slices})
        bad = [i for i in keys if not 0 <= i < len(moved) or not moved[i].any()]
        if bad:
            raise ValueError(f"key slices {bad} along axis {axis} are empty or outside the mask")
    out = moved.copy()
    for lo, hi in zip(keys[:-1], keys[1:], strict=True):
        if hi - lo < 2:
            continue
        d_lo = _signed_distance(moved[lo], in_plane)
        d_hi = _signed_distance(moved[hi], in_plane)
        for k in range(lo + 1, hi):
            t = (k - lo) / (hi - lo)
            out[k] = (1 - t) * d_lo + t * d_hi > 0
    return np.moveaxis(out, 0, axis)
