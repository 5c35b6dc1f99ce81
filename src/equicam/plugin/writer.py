"""napari writer: save a Labels layer as NIfTI in the geometry of the scan it belongs to.

A layer made by equicam carries its case's geometry; any other Labels layer (one drawn with
napari's own "new labels") is saved in the geometry of the open case whose scans have its
shape. Saving goes through :mod:`equicam.core.atomic`: atomic, never over a scan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from equicam.core.atomic import numbered
from equicam.core.brats import CaseError, save_volume
from equicam.core.cam_output import description
from equicam.core.errors import EquicamError
from equicam.plugin.reader import prefer_for_masks
from equicam.plugin.sample_data import chosen_mask_folder, user_mask_folder


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
        case's input files (set by the reader); without it, the geometry of an open case
        whose scans have the layer's shape is used.

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
        labels = np.asarray(data)
        info = (meta.get("metadata") or {}).get("equicam") or _open_case_info(path, labels.shape)
        _check_labels(path, labels)
        written = save_volume(
            labels,
            info["geometry"],
            Path(path),
            protect=info["inputs"],
            replace=True,
            description=mask_description(info),
        )
    except EquicamError as error:
        raise OSError(str(error)) from error
    prefer_for_masks()
    return [str(written)]


def mask_description(info: dict) -> str | None:
    """The header description of a mask made by a run (its protocol, map and run, as
    ``equicam cam`` writes them) or opened from such a file; None for other masks (the
    scan's description stays)."""
    if {"protocol", "map", "run"} <= info.keys():
        return description(info["protocol"], info["map"], info["run"])
    return info.get("description")


def _check_labels(path: str | Path, labels: np.ndarray) -> None:
    if labels.max(initial=0) > 255 or labels.min(initial=0) < 0:
        raise CaseError(path, "labels must lie in 0..255 to be saved as uint8")


def _open_case_info(path: str, shape: tuple[int, ...]) -> dict:
    """The ``equicam`` metadata of the one open case whose scans have ``shape``."""
    import napari

    viewer = napari.current_viewer()
    found = {}
    for layer in viewer.layers if viewer is not None else ():
        info = layer.metadata.get("equicam", {})
        if "geometry" in info and info["geometry"].display_shape == tuple(shape):
            found.setdefault(info["case_folder"], info)
    if len(found) != 1:
        reason = (
            f"several open cases have its shape {tuple(shape)}: {', '.join(sorted(found))}"
            if found
            else f"no open case has its shape {tuple(shape)}; open the case it was drawn on"
        )
        raise CaseError(path, f"this Labels layer has no scan geometry, and {reason}")
    return next(iter(found.values()))


def save_mask_layer(data: Any, info: dict, path: str | Path) -> Path:
    """The plugin's "Save": write a mask without ever replacing another saved mask.

    ``path`` is replaced only when it is the file this layer was last saved to or opened
    from (``info["saved_file"]``); any other existing file is kept and the mask is written
    beside it (``name_2.nii.gz``...). A folder under the user's mask folder or the chosen
    save folder is created. Records the written file in ``info["saved_file"]``.

    Raises
    ------
    EquicamError
        When the mask cannot be saved (a scan's name, a bad folder, a full disk).
    """
    labels = np.asarray(data)
    path = Path(path)
    _check_labels(path, labels)
    ours = [f for f in (user_mask_folder(), chosen_mask_folder()) if f is not None]
    if any(path.parent.resolve().is_relative_to(folder.resolve()) for folder in ours):
        path.parent.mkdir(parents=True, exist_ok=True)
    own = info.get("saved_file") == str(path)
    candidate, number = path, 1
    while candidate.exists() and not (own and candidate == path):
        number += 1
        candidate = numbered(path, number)
    written = save_volume(
        labels,
        info["geometry"],
        candidate,
        protect=info["inputs"],
        replace=own,
        description=mask_description(info),
    )
    info["saved_file"] = str(written)
    prefer_for_masks()
    return written
