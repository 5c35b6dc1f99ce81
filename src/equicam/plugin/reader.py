"""napari reader: a BraTS case folder, or any NIfTI file of a case, opens as the whole case.

A folder of several cases opens in the case navigator of the CAM inspector (docked if needed).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from equicam.core.brats import CaseError, find_case, load_case
from equicam.plugin.cases import holds_cases
from equicam.plugin.layers import case_layers


def get_reader(path: str | list[str]) -> Callable[[str], list[tuple]] | None:
    """Return :func:`read_case` when ``path`` belongs to a BraTS case, else None (never raises)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        find_case(Path(path))
    except CaseError:
        return read_folder if holds_cases(Path(path)) else None
    return read_case


def read_folder(path: str | list[str]) -> list[tuple]:
    """Open a folder of cases in the CAM inspector's case navigator (no layers returned here:
    the navigator adds the case it opens)."""
    import napari

    from equicam.plugin.viewer import open_folder

    if isinstance(path, list):
        path = path[0]
    viewer = napari.current_viewer()
    if viewer is None:
        raise CaseError(path, "a folder of cases opens only in a napari window")
    open_folder(viewer, path)
    return [(None,)]


def read_case(path: str | list[str]) -> list[tuple]:
    """Load the case that ``path`` belongs to as image layers plus its ground truth.

    Problems that do not stop loading (a missing modality, an oblique scan) are shown to the
    user as warnings; bad files raise :class:`~equicam.core.brats.CaseError`, which napari
    shows as a notification naming the file.
    """
    if isinstance(path, list):
        path = path[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        case = load_case(path)
    for warning in caught:
        warnings.warn(warning.message, warning.category, stacklevel=2)
    return case_layers(case)
