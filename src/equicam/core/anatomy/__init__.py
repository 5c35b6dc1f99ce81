"""Tissue probability maps of a real brain on the BraTS grid, for synthetic cases.

Derived from the MNI152 2009 (ICBM 2009a nonlinear symmetric) templates that nilearn ships;
see NOTICE.txt for their copyright and licence. ``python -m equicam.core.anatomy`` rebuilds
``mni152_brats_grid.npz`` from nilearn.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

ANATOMY_FILE = Path(__file__).with_name("mni152_brats_grid.npz")
BRATS_SHAPE = (240, 240, 155)
BRATS_AFFINE = np.array(
    [[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 239.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


@lru_cache(maxsize=1)
def load_anatomy() -> dict[str, np.ndarray]:
    """GM, WM and CSF probabilities (float32, 0..1) and the brain mask (bool).

    Arrays are ``(240, 240, 155)`` in BraTS file order (LPS, :data:`BRATS_AFFINE`).
    """
    with np.load(ANATOMY_FILE) as data:
        maps = {k: data[k].astype(np.float32) / 255.0 for k in ("gm", "wm", "csf")}
        maps["brain"] = data["brain"].astype(bool)
    return maps
