"""Output faults: --out a file or the case folder, two cases or a corrected or damaged mask in
one --out, prepare into a cache, out-of-range flags, evaluate of a bad case or a bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.conftest import write_case
from tests.hostile.common import Run, cam_argv, tiny_checkpoint, write_test_case


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


def _mask_rerun(damage: Callable[[Path], None]) -> Callable[[Path], Run]:
    """The second run must keep the folder of the first, whose mask was changed by
    ``damage(mask)``, and write its own beside it."""

    def build(root: Path) -> Run:
        from equicam.core.cam_output import cam_case

        case = write_test_case(root)
        argv = cam_argv(root, case)
        cam_case(case, argv[3], root / "out", device="cpu")
        damage(root / "out" / "BraTS2021_00001" / "mask-fused_mean.nii.gz")
        return Run(argv, None, made=[root / "out" / "BraTS2021_00001_2" / "cam.json"])

    return build


def _relabel(mask: Path) -> None:
    image = nib.load(mask)
    data = np.asarray(image.dataobj).copy()
    data[data == 1] = 2
    data[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(data, image.affine, image.header), mask)


def _flatten(mask: Path) -> None:
    image = nib.load(mask)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[..., 0], image.affine), mask)


def _rerun_after_out_in_case(root: Path) -> Run:
    """After a run whose --out was the case folder, the case still opens as one case."""
    case = write_test_case(root)
    first = cam_argv(root, case)
    first[first.index("--out") + 1] = str(case)
    again = cam_argv(root, case)
    return Run(again, None, before=[first], made=[root / "out" / "BraTS2021_00001" / "cam.json"])


def _evaluate_argv(root: Path, data: Path, checkpoint: Path | None = None) -> list[str]:
    checkpoint = checkpoint or tiny_checkpoint(root / "tiny.safetensors")
    return ["evaluate", str(data), "--checkpoint", str(checkpoint), "--out", str(root / "ev"),
            "--device", "cpu"]  # fmt: skip


def _evaluate_bad_case(root: Path) -> Run:
    """A bad case after three good ones: reported, the three scored and kept."""
    ids = [f"BraTS2021_0000{i}" for i in range(1, 5)]
    for case_id in ids:
        write_case(root / "data" / case_id, case_id=case_id)
    (root / "data" / ids[-1] / f"{ids[-1]}_flair.nii.gz").write_bytes(b"junk")
    kept = [root / "ev" / "cases" / f"{case_id}.json" for case_id in ids[:3]]
    return Run(
        _evaluate_argv(root, root / "data"), None, made=[root / "ev" / "results.json", *kept]
    )


def _evaluate_bad_input(make) -> Callable[[Path], Run]:
    """evaluate refuses a bad input before it makes --out."""

    def build(root: Path) -> Run:
        data, checkpoint, phrase, names = make(root)
        return Run(_evaluate_argv(root, data, checkpoint), phrase, names, not_made=[root / "ev"])

    return build


def _random_checkpoint(root: Path):
    write_case(root / "data" / "A", case_id="BraTS2021_00001")
    (root / "bad.safetensors").write_bytes(b"\x07" * 5000)
    return root / "data", root / "bad.safetensors", "not a readable", root / "bad.safetensors"


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
    "rerun over a relabelled mask": _mask_rerun(_relabel),
    "rerun over a corrupt mask in --out": _mask_rerun(lambda p: p.write_bytes(b"junk" * 10)),
    "rerun over a 2-D mask in --out": _mask_rerun(_flatten),
    "rerun after --out was the case folder": _rerun_after_out_in_case,
    "prepare into an existing cache": _prepare_into_cache,
    "prepare --size 0": _prepare_size("0"),
    "prepare --size -5": _prepare_size("-5"),
    "prepare --size 100000": _prepare_size("100000"),
    "prepare of a missing folder": lambda r: Run(
        ["prepare", str(r / "nothing"), "--out", str(r / "c")], "not a folder", r / "nothing"
    ),
    "--threshold 1.5": _threshold("1.5"),
    "--threshold nan": _threshold("nan"),
    "evaluate: a bad case after three good": _evaluate_bad_case,
    "evaluate of a missing folder": _evaluate_bad_input(
        lambda r: (r / "nothing", None, "not a folder", r / "nothing")
    ),
    "evaluate with a corrupt checkpoint": _evaluate_bad_input(_random_checkpoint),
}
