"""Rebuild the committed anatomy maps from nilearn's MNI152 templates.

Run ``python -m equicam.core.anatomy`` (needs the ``dev`` extra, which brings nilearn). The
MNI152 2009 templates ship inside nilearn's wheel; no network is used.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from equicam.core.anatomy import ANATOMY_FILE, BRATS_AFFINE, BRATS_SHAPE


def derive_maps() -> dict[str, np.ndarray]:
    """Resample MNI152 GM, WM and brain mask onto the BraTS grid (uint8, file order LPS)."""
    from nilearn import datasets

    gm_img = datasets.load_mni152_gm_template(resolution=1)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, np.float32)
    gm = np.asarray(gm_img.dataobj, np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    # Centre the MNI brain in the BraTS field of view.
    mni_centre = gm_img.affine @ np.r_[ndimage.center_of_mass(mask), 1.0]
    brats_centre = BRATS_AFFINE @ np.r_[(np.array(BRATS_SHAPE) - 1) / 2, 1.0]
    to_mni = np.linalg.inv(gm_img.affine) @ _translation(mni_centre[:3] - brats_centre[:3])
    to_mni = to_mni @ BRATS_AFFINE
    grid = np.indices(BRATS_SHAPE, dtype=np.float32).reshape(3, -1)
    coords = (to_mni[:3, :3] @ grid + to_mni[:3, 3:]).reshape(3, *BRATS_SHAPE)
    maps = {}
    for name, volume in (("gm", gm), ("wm", wm), ("brain", mask.astype(np.float32))):
        maps[name] = ndimage.map_coordinates(volume, coords, order=1, cval=0.0)
    brain = maps["brain"] > 0.5
    tissue = np.clip(maps["gm"] + maps["wm"], 0, 1)
    out = {
        "gm": np.where(brain, maps["gm"], 0),
        "wm": np.where(brain, maps["wm"], 0),
        "csf": np.where(brain, 1 - tissue, 0),
    }
    result = {k: np.round(np.clip(v, 0, 1) * 255).astype(np.uint8) for k, v in out.items()}
    result["brain"] = brain.astype(np.uint8)
    return result


def _translation(offset: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


if __name__ == "__main__":
    np.savez_compressed(ANATOMY_FILE, **derive_maps())
    print(f"wrote {ANATOMY_FILE}")
