"""Fusing per-modality maps into one (the paper has none; ours).

Every function takes maps that are already gated and normalised to [0, 1], all of one shape,
and returns one map of that shape. Missing modalities are simply not in the list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def fuse_mean(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Voxel-wise mean: agreement between sequences is rewarded."""
    return np.mean(maps, axis=0).astype(np.float32)


def fuse_max(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Voxel-wise maximum: any sequence that sees tumour is enough."""
    return np.max(maps, axis=0).astype(np.float32)


def fuse_geometric(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Voxel-wise geometric mean: every sequence must agree (a soft AND)."""
    return np.exp(np.mean(np.log(np.clip(maps, 1e-6, 1.0)), axis=0)).astype(np.float32) * (
        np.min(maps, axis=0) > 0
    )


FUSIONS: dict[str, Callable[[Sequence[np.ndarray]], np.ndarray]] = {
    "mean": fuse_mean,
    "max": fuse_max,
    "geometric": fuse_geometric,
}
