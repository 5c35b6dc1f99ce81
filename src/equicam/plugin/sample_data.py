"""napari sample data: the small BraTS-like case shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from equicam.core.brats import load_case
from equicam.plugin.layers import case_layers

SAMPLE_CASE = Path(__file__).resolve().parent.parent / "sample_data" / "BraTS2021_00000"


def sample_case() -> list[tuple]:
    """The sample case as four image layers (T1, T1ce, T2, FLAIR) and its ground truth."""
    return case_layers(load_case(SAMPLE_CASE))
