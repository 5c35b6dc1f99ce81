"""Fusing per-modality maps into one (the paper has none; ours).

Every function takes maps that are already gated and normalised to [0, 1], all of one shape,
and returns one map of that shape. Missing modalities are simply not in the list. The weighted
mean uses per-modality weights chosen on validation patients (``training.calibrate``) and kept
in the checkpoint: a sequence whose maps carry no tumour signal can be weighed down to zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np


def fuse_mean(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Voxel-wise mean: agreement between sequences is rewarded."""
    out = np.zeros(maps[0].shape, np.float32)
    for m in maps:  # one volume at a time: no (M, Z, Y, X) stack in memory
        out += m
    out /= len(maps)
    return out


def fuse_max(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Voxel-wise maximum: any sequence that sees tumour is enough."""
    out = np.array(maps[0], np.float32)
    for m in maps[1:]:
        np.maximum(out, m, out=out)
    return out


def fuse_geometric(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Voxel-wise geometric mean: every sequence must agree (a soft AND)."""
    log_sum = np.zeros(maps[0].shape, np.float32)
    everywhere = np.ones(maps[0].shape, bool)
    for m in maps:
        log_sum += np.log(np.clip(m, 1e-6, 1.0, dtype=np.float32))
        everywhere &= m > 0
    out = np.exp(log_sum / len(maps))
    out *= everywhere
    return out


FUSIONS: dict[str, Callable[[Sequence[np.ndarray]], np.ndarray]] = {
    "mean": fuse_mean,
    "max": fuse_max,
    "geometric": fuse_geometric,
}


def fuse_weighted(
    maps: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None
) -> np.ndarray:
    """Voxel-wise weighted mean of modality -> map.

    Weights are renormalised over the modalities present; missing weights (or all-zero ones
    among those present) mean equal weights, i.e. :func:`fuse_mean`.
    """
    w = {m: float((weights or {}).get(m, 0.0)) for m in maps}
    total = sum(w.values())
    if total <= 0:
        return fuse_mean(list(maps.values()))
    out = np.zeros(next(iter(maps.values())).shape, np.float32)
    for m, volume in maps.items():
        if w[m]:
            out += np.float32(w[m] / total) * volume
    return out


FUSION_NAMES = (*FUSIONS, "weighted")


def fuse(
    name: str, maps: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None
) -> np.ndarray:
    """The fusion ``name`` (one of :data:`FUSION_NAMES`) of modality -> map."""
    if name == "weighted":
        return fuse_weighted(maps, weights)
    return FUSIONS[name](list(maps.values()))
