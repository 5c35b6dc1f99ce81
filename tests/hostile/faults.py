"""Faults around real runs: a save killed midway (SIGKILL), a full disk, a second run into the
same --out at once."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_case
from tests.hostile.common import (
    Run,
    at_once,
    cam_argv,
    disk_full_past,
    kill_mid_save,
    tiny_checkpoint,
    write_test_case,
)


def _cam_killed(root: Path) -> Run:
    """A cam run of the case killed while it wrote its folder; the next run cleans up."""
    case = write_test_case(root)
    kill_mid_save("folder", root / "out" / "BraTS2021_00001")
    return Run(cam_argv(root, case), None, made=[root / "out" / "BraTS2021_00001" / "cam.json"])


def _prepare_argv(root: Path) -> list[str]:
    write_case(root / "data" / "A", case_id="BraTS2021_00001")
    return ["prepare", str(root / "data"), "--out", str(root / "cache"), "--size", "32"]


def _prepare_killed(root: Path) -> Run:
    argv = _prepare_argv(root)
    kill_mid_save("folder", root / "cache")
    return Run(argv, None, made=[root / "cache" / "meta.json"])


def _full_disk_at_cam_json(root: Path) -> Run:
    """The maps (~200 bytes each) fit, cam.json (~2.5 kB) does not."""
    folder = root / "out" / "BraTS2021_00001"
    return Run(
        cam_argv(root, write_test_case(root)),
        "cannot write",
        folder / "cam.json",
        during=disk_full_past(1000),
        not_made=[folder],
    )


def _full_disk_in_prepare(root: Path) -> Run:
    cache = root / "cache"
    return Run(
        _prepare_argv(root), "cannot write", cache, during=disk_full_past(4096), not_made=[cache]
    )


def _at_once(same_case: bool):
    def build(root: Path) -> Run:
        first = write_test_case(root)
        second = first if same_case else write_case(root / "B", case_id="BraTS2021_00002")
        checkpoint = tiny_checkpoint(root / "tiny.safetensors")
        other = "BraTS2021_00001_2" if same_case else "BraTS2021_00002"
        out = root / "out"
        return Run(
            cam_argv(root, first, checkpoint),
            None,
            during=at_once(cam_argv(root, second, checkpoint)),
            made=[out / "BraTS2021_00001" / "cam.json", out / other / "cam.json"],
        )

    return build


FAULT_KINDS = {
    "cam killed mid-save, then run again": _cam_killed,
    "prepare killed mid-save, then run again": _prepare_killed,
    "full disk at cam.json": _full_disk_at_cam_json,
    "full disk in prepare": _full_disk_in_prepare,
    "two cases into one --out at once": _at_once(same_case=False),
    "one case twice into one --out at once": _at_once(same_case=True),
}
