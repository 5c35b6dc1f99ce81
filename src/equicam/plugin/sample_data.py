"""napari sample data: the small BraTS-like case shipped inside the package.

Masks of the sample case are saved in the user's mask folder, never inside the installed
package (where a later install would lose them, or pack them into a wheel); masks of any case
go to the save folder chosen in the dock when there is one.
"""

from __future__ import annotations

import os
from pathlib import Path

from equicam.core.brats import load_case
from equicam.plugin.layers import case_layers
from equicam.plugin.settings import load_settings

PACKAGE = Path(__file__).resolve().parent.parent
SAMPLE_CASE = PACKAGE / "sample_data" / "BraTS2021_00000"


def sample_case() -> list[tuple]:
    """The sample case as four image layers (T1, T1ce, T2, FLAIR) and its ground truth."""
    return case_layers(load_case(SAMPLE_CASE))


def user_mask_folder() -> Path:
    """``$EQUICAM_MASK_DIR``, default ``~/equicam-masks``: where masks of packaged cases go."""
    return Path(os.environ.get("EQUICAM_MASK_DIR", "~/equicam-masks")).expanduser()


def in_package(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` lies inside the installed package (no mask is saved there)."""
    inside = [PACKAGE, SAMPLE_CASE.resolve().parent]
    return any(Path(folder).resolve().is_relative_to(root) for root in inside)


def chosen_mask_folder() -> Path | None:
    """The save folder chosen in the dock (remembered in the settings); None: none chosen."""
    folder = load_settings().get("masks", {}).get("folder")
    return Path(folder) if folder and not in_package(folder) else None


def mask_folder(case_folder: str | os.PathLike, case_id: str, chosen: Path | None) -> Path:
    """The folder to save a case's masks in: ``chosen`` (the save folder, as
    :func:`chosen_mask_folder` gives it) when there is one, else the case's own, unless it
    lies inside the installed package (the sample case), then ``user_mask_folder() /
    case_id``."""
    if chosen is not None:
        return chosen
    if in_package(case_folder):
        return user_mask_folder() / case_id
    return Path(case_folder)
