"""Output faults: --out a file or the case folder, two cases or a corrected mask in one
--out, prepare into a cache, out-of-range flags."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.conftest import write_case
from tests.hostile.common import Run, cam_argv, write_test_case


def _out_is_file(root: Path) -> Run:
    (root / "out").write_text("a file")
    return Run(
        cam_argv(root, write_test_case(root)), "cannot create|not a folder|is a file", root / "out"
    )


def _out_in_case(root: Path) -> Run:
    case = write_test_case(root)
    argv = cam_argv(root, case)
    argv[argv.index("--out") + 1] = str(case)
    return Run(argv, None)


def _two_cases_one_out(root: Path) -> Run:
    first = write_test_case(root)
    second = write_case(root / "BraTS2021_00002", case_id="BraTS2021_00002")
    return Run(cam_argv(root, second), None, before=[cam_argv(root, first)])


def _edited_mask_rerun(root: Path) -> Run:
    """The second run must keep the folder of the first, whose mask the user relabels."""
    from equicam.core.cam_output import cam_case

    case = write_test_case(root)
    argv = cam_argv(root, case)
    cam_case(case, argv[3], root / "out", device="cpu")
    mask = root / "out" / "BraTS2021_00001" / "mask-fused_mean.nii.gz"
    image = nib.load(mask)
    data = np.asarray(image.dataobj).copy()
    data[data == 1] = 2
    data[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(data, image.affine, image.header), mask)
    return Run(argv, None)


def _prepare_into_cache(root: Path) -> Run:
    write_case(root / "data" / "A", case_id="BraTS2021_00001")
    out = root / "cache"
    out.mkdir()
    (out / "images.npy").write_bytes(b"somebody's cache")
    (out / "meta.json").write_text("{}")
    return Run(["prepare", str(root / "data"), "--out", str(out)], "already holds files", out)


def _prepare_size(size: str) -> Callable[[Path], Run]:
    def build(root: Path) -> Run:
        write_case(root / "data" / "A", case_id="BraTS2021_00001")
        argv = ["prepare", str(root / "data"), "--out", str(root / "c"), "--size", size]
        return Run(argv, "--size: must be an integer", Path("--size"))

    return build


def _threshold(value: str) -> Callable[[Path], Run]:
    return lambda r: Run(cam_argv(r, write_test_case(r), None, "--threshold", value), "threshold")


OUTPUT_KINDS = {
    "--out is a file": _out_is_file,
    "--out is the case folder": _out_in_case,
    "two cases into one --out": _two_cases_one_out,
    "rerun over a relabelled mask": _edited_mask_rerun,
    "prepare into an existing cache": _prepare_into_cache,
    "prepare --size 0": _prepare_size("0"),
    "prepare --size -5": _prepare_size("-5"),
    "prepare --size 100000": _prepare_size("100000"),
    "prepare of a missing folder": lambda r: Run(
        ["prepare", str(r / "nothing"), "--out", str(r / "c")], "not a folder", r / "nothing"
    ),
    "--threshold 1.5": _threshold("1.5"),
    "--threshold nan": _threshold("nan"),
}
