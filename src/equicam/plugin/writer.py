"""napari writer: save a Labels layer as NIfTI in the geometry of the scan it belongs to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from equicam.core.brats import CaseError, save_volume


def write_mask(path: str, data: Any, meta: dict) -> list[str]:
    """Write a mask atomically with its source scan's affine and header.

    Parameters
    ----------
    path
        Target ``.nii.gz`` or ``.nii`` file.
    data
        The Labels layer's data, in display order.
    meta
        The layer's attributes; ``meta["metadata"]["equicam"]`` holds the geometry and the
        case's input files (set by the reader), which are never overwritten.

    Returns
    -------
    list of str
        The written path.

    Raises
    ------
    OSError
        With the reason, when the mask cannot be saved. (napari treats a ``ValueError`` from
        a writer as "not my format" and would hide the message.)
    """
    try:
        return [str(_write(Path(path), data, meta))]
    except CaseError as error:
        raise OSError(str(error)) from error


def _write(path: Path, data: Any, meta: dict) -> Path:
    info = (meta.get("metadata") or {}).get("equicam")
    if not info or "geometry" not in info:
        raise CaseError(
            path,
            "this Labels layer has no scan geometry; only masks of a case opened with "
            "napari-equicam can be saved in the scan's geometry",
        )
    labels = np.asarray(data)
    if labels.max(initial=0) > 255 or labels.min(initial=0) < 0:
        raise CaseError(path, "labels must lie in 0..255 to be saved as uint8")
    written = save_volume(
        labels, info["geometry"], Path(path), dtype="uint8", protect=info["inputs"]
    )
    return [str(written)]
