"""Shared fixtures and helpers: cases written to disk with nibabel, for real."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from equicam.core.synth import write_case as write_synthetic_case


@pytest.fixture(scope="session")
def synthetic_cases(tmp_path_factory):
    """Four small synthetic cases (three with tumour, one per type) in the BraTS 2021 layout.

    Case indices 0 (high-grade), 6 (low-grade), 8 (multifocal) and 9 (tumour-free) of seed 7.
    """
    data = tmp_path_factory.mktemp("synthetic")
    for index in (0, 6, 8, 9):
        write_synthetic_case(data, seed=7, index=index, size="small")
    return data


BRATS_LPS = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
SUFFIXES = {
    "brats2021": {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg"},
    "brats2023": {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "seg": "-seg"},
}
MODALITY_VALUES = {"t1": 10, "t1ce": 20, "t2": 30, "flair": 40}


def raw_labels(shape, layout):
    """A segmentation with a known pattern: core, oedema and enhancing slabs (raw labels)."""
    codes = {"brats2021": (1, 2, 4), "brats2023": (1, 2, 3), "decathlon": (2, 1, 3)}[layout]
    seg = np.zeros(shape, np.uint8)
    seg[2:4, 2:4, 2:4] = codes[0]  # core (necrotic / non-enhancing)
    seg[4:6, 2:4, 2:4] = codes[1]  # oedema
    seg[6:8, 2:4, 2:4] = codes[2]  # enhancing
    return seg


def write_case(
    folder: Path,
    layout: str = "brats2021",
    case_id: str = "Case_001",
    shape=(12, 10, 8),
    affine=BRATS_LPS,
    ext=".nii.gz",
    modalities=("t1", "t1ce", "t2", "flair"),
    seg=True,
) -> Path:
    """Write a tiny case on disk; each modality is filled with its own constant plus a ramp.

    Returns the case folder (for ``decathlon``, the dataset root with imagesTr/labelsTr).
    """
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.arange(np.prod(shape)).reshape(shape) % 7
    volumes = {m: (MODALITY_VALUES[m] + ramp).astype(np.int16) for m in modalities}
    if layout == "decathlon":
        (folder / "imagesTr").mkdir(exist_ok=True)
        stacked = np.stack([volumes[m] for m in ("flair", "t1", "t1ce", "t2")], axis=-1)
        nib.save(nib.Nifti1Image(stacked, affine), folder / "imagesTr" / f"{case_id}{ext}")
        if seg:
            (folder / "labelsTr").mkdir(exist_ok=True)
            labels = raw_labels(shape, layout)
            nib.save(nib.Nifti1Image(labels, affine), folder / "labelsTr" / f"{case_id}{ext}")
        return folder
    names = SUFFIXES[layout]
    for m, volume in volumes.items():
        nib.save(nib.Nifti1Image(volume, affine), folder / f"{case_id}{names[m]}{ext}")
    if seg:
        labels = raw_labels(shape, layout)
        nib.save(nib.Nifti1Image(labels, affine), folder / f"{case_id}{names['seg']}{ext}")
    return folder
