"""A folder of cases for the case navigator (no Qt): statuses, resume point, saved masks.

Progress is remembered per folder in the settings file (:mod:`.settings`): each case's
status and mask volume, and the case last open. A case's saved masks are the files
``<case id>_mask*.nii.gz`` in its folder or in the chosen save folder (the names "Save
selected mask" writes), so a case counts as saved even when its masks were saved in another
session.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from equicam.core.brats import Case, CaseError, CaseFiles, find_case, find_cases, load_case
from equicam.plugin.sample_data import chosen_mask_folder, mask_folder
from equicam.plugin.settings import load_settings, update_settings

STATUSES = ("new", "maps computed", "edited", "saved")


def holds_cases(path: Path) -> bool:
    """Whether ``path`` is a folder of cases (not one case): NIfTI files in it or in its
    sub-folders, forming cases. Only then is the (recursive) search run, so that probing a
    large unrelated folder stays quick; never raises."""
    try:
        if not path.is_dir():
            return False
        try:
            find_case(path)
            return False  # a single case: opened as such
        except CaseError:
            pass
        folders = [path, *(p for p in path.iterdir() if p.is_dir())]
        if not any(f.name.endswith((".nii", ".nii.gz")) for d in folders for f in d.iterdir()):
            return False
        return bool(find_cases(path))
    except (CaseError, OSError):
        return False


def saved_masks(files: CaseFiles, chosen: Path | None) -> list[Path]:
    """The masks saved next to a case or in its mask folder (``chosen``, the save folder as
    :func:`~equicam.plugin.sample_data.chosen_mask_folder` gives it, or the user's for the
    sample case), oldest first (so the newest is added on top)."""
    folders = {files.folder, mask_folder(files.folder, files.case_id, chosen)}
    found = [
        path
        for folder in folders
        for pattern in (f"{files.case_id}_mask*.nii.gz", f"{files.case_id}_mask*.nii")
        for path in folder.glob(pattern)
    ]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def corrected_cases(
    data_dir: str | os.PathLike, modalities: Sequence[str], bias_correction: bool = False
) -> tuple[list[tuple[dict[str, np.ndarray], np.ndarray]], list[str]]:
    """The cases under ``data_dir`` with a saved mask, ready to learn from, normalised as
    inference normalises them (with ``bias_correction``, each sequence divided by its fitted
    bias field first: as the second stage to fine-tune was trained).

    Returns
    -------
    (cases, sources)
        ``(volume, mask)`` per case: ``modalities`` -> normalised volume ``(Z, Y, X)`` in that
        order, and its newest saved mask (:func:`saved_masks`) as bool; and those masks' paths.

    Raises
    ------
    CaseError
        When no case has a saved mask, or a case or its mask cannot be read.
    """
    from equicam.core.evaluation import normalised_images

    cases, sources = [], []
    chosen = chosen_mask_folder()
    for files in find_cases(data_dir):
        saved = saved_masks(files, chosen)
        if not saved:
            continue
        case = load_case(files, list(modalities))
        volume = normalised_images(case, modalities, bias_correction)
        cases.append((volume, load_mask(saved[-1], case) > 0))
        sources.append(str(saved[-1]))
    if not cases:
        raise CaseError(data_dir, "no case with a saved mask (<case id>_mask*.nii.gz) in it")
    return cases, sources


def saved_mask_name(path: Path, case_id: str) -> str:
    """Layer name of a saved mask: ``<id>_mask_fused_mean_baseline.nii.gz`` -> ``mask fused
    mean baseline`` (saving it again writes the same file)."""
    stem = path.name.removesuffix(".gz").removesuffix(".nii").removeprefix(f"{case_id}_")
    return stem.replace("_", " ")


def load_mask(path: Path, case: Case) -> np.ndarray:
    """A saved mask in the case's display order, as uint8.

    Raises
    ------
    CaseError
        When the file cannot be read or its grid is not the case's.
    """
    try:
        image = nib.load(path)
        data = np.asarray(image.dataobj)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as error:
        raise CaseError(path, f"cannot read the saved mask ({error})") from error
    if data.shape != case.geometry.file_shape or not np.allclose(
        image.affine, case.geometry.affine, atol=1e-3
    ):
        raise CaseError(path, f"saved mask does not lie on the grid of case {case.case_id}")
    return np.ascontiguousarray(case.geometry.to_display(data), dtype=np.uint8)


@dataclass
class CaseFolder:
    """The cases of a data folder and the progress through them.

    Attributes
    ----------
    data_dir
        The folder (resolved).
    cases
        The cases found under it, sorted by id.
    status
        Case id -> one of :data:`STATUSES`.
    volume
        Case id -> volume of its current mask in cm3 (None before any mask).
    current
        Index of the open case.
    """

    data_dir: Path
    cases: list[CaseFiles]
    status: dict[str, str] = field(default_factory=dict)
    volume: dict[str, float | None] = field(default_factory=dict)
    current: int = 0

    @classmethod
    def open(cls, data_dir: str | os.PathLike) -> CaseFolder:
        """Find the cases and restore the remembered progress.

        Raises
        ------
        CaseError
            When the folder holds no case.
        """
        data_dir = Path(data_dir).resolve()
        cases = find_cases(data_dir)
        saved = load_settings().get("folders", {}).get(str(data_dir), {})
        folder = cls(data_dir, cases)
        chosen = chosen_mask_folder()
        for files in cases:
            status = saved.get("status", {}).get(files.case_id, "new")
            if saved_masks(files, chosen):
                status = "saved" if status != "edited" else status
            elif status == "saved":  # its files were removed since
                status = "maps computed"
            folder.status[files.case_id] = status if status in STATUSES else "new"
            folder.volume[files.case_id] = saved.get("volume", {}).get(files.case_id)
        folder.current = folder.resume_index()
        return folder

    @property
    def ids(self) -> list[str]:
        """Case ids in list order."""
        return [files.case_id for files in self.cases]

    def resume_index(self) -> int:
        """The first case that is not saved (the last case when all are)."""
        for index, case_id in enumerate(self.ids):
            if self.status[case_id] != "saved":
                return index
        return len(self.cases) - 1

    def set(self, case_id: str, status: str | None = None, volume: float | None = None) -> None:
        """Record a case's status and/or mask volume and remember them."""
        if status is not None:
            self.status[case_id] = status
        if volume is not None:
            self.volume[case_id] = round(volume, 2)
        self.remember()

    def remember(self) -> None:
        """Write the progress of this folder to the settings file."""
        update_settings(
            "folders",
            {
                str(self.data_dir): {
                    "current": self.ids[self.current],
                    "status": self.status,
                    "volume": self.volume,
                }
            },
        )
