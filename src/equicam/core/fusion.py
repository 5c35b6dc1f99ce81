"""Fusing per-modality maps into one (the paper has none; ours).

Every function takes maps that are already gated and normalised to [0, 1], all of one shape,
and returns one map of that shape. Missing modalities are simply not in the list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
