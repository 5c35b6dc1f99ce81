"""The safe-write module, with real faults: a SIGKILL mid-save, a full disk, a swapped folder."""

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from equicam.core.atomic import (
    TEMP_SUFFIX,
    SaveError,
    folder_in_place,
    new_folder,
    scan_reason,
    write_file,
    write_json,
)

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}

# A child that starts a safe write, says "half" once half the bytes are out, then hangs.
SLOW_WRITER = """
import sys, time
from equicam.core.atomic import write_file, folder_in_place

def slow(handle):
    handle.write(b"new" * 100_000)
    handle.flush()
    print("half", flush=True)
    time.sleep(60)

if sys.argv[1] == "file":
    write_file(sys.argv[2], slow, replace=True)
else:
    with folder_in_place(sys.argv[2]) as work:
        (work / "images.npy").write_bytes(b"x" * 1000)
        print("half", flush=True)
        time.sleep(60)
"""


def _kill_mid_save(kind: str, target: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, kind, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert child.stdout.readline().strip() == "half"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    assert child.returncode == -signal.SIGKILL


def _litter(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


def test_a_save_killed_midway_leaves_the_old_file_and_the_next_save_cleans_up(tmp_path):
    target = tmp_path / "last_state.pt"
    target.write_bytes(b"old state")
    _kill_mid_save("file", target)
    assert target.read_bytes() == b"old state"
    assert len(_litter(tmp_path)) == 1  # the killed run's temporary, fully written or not
    write_file(target, b"next state", replace=True)
    assert target.read_bytes() == b"next state"
    assert _litter(tmp_path) == []


def test_a_folder_build_killed_midway_leaves_nothing_named_and_is_cleaned(tmp_path):
    target = tmp_path / "cache"
    _kill_mid_save("folder", target)
    assert not target.exists()
    assert len(_litter(tmp_path)) == 1
    with folder_in_place(target) as work:
        (work / "meta.json").write_text("{}")
    assert [p.name for p in target.iterdir()] == ["meta.json"]
    assert _litter(tmp_path) == []


def test_a_live_writers_temporary_is_not_taken_for_litter(tmp_path):
    target = tmp_path / "a.json"
    seen = []

    def nested(handle):
        # another write of the same name while this one is under way
        write_file(target, b"other")
        seen.extend(_litter(tmp_path))
        handle.write(b"mine")

    with pytest.raises(SaveError, match="already exists"):
        write_file(target, nested)
    assert len(seen) == 1 and target.read_bytes() == b"other"
    assert _litter(tmp_path) == []


SCAN_NAMES = [
    "BraTS2021_00001_t1.nii.gz",
    "BraTS2021_00001_t1ce.nii",
    "BraTS2021_00001_T2.nii.gz",
    "BraTS2021_00001_flair.nii.gz",
    "BraTS2021_00001_seg.nii.gz",
    "BraTS-GLI-00001-000-t1n.nii.gz",
    "BraTS-GLI-00001-000-t1c.nii.gz",
    "BraTS-GLI-00001-000-t2w.nii",
    "BraTS-GLI-00001-000-t2f.nii.gz",
    "BraTS-GLI-00001-000-seg.nii.gz",
    "imagesTr/BRATS_001.nii.gz",
    "labelsTr/BRATS_001.nii.gz",
]


@pytest.mark.parametrize("name", SCAN_NAMES)
@pytest.mark.parametrize("exists", [True, False])
def test_nothing_named_like_a_scan_is_ever_written(tmp_path, name, exists):
    target = tmp_path / name
    target.parent.mkdir(exist_ok=True)
    if exists:
        target.write_bytes(b"a patient's scan")
    with pytest.raises(SaveError, match="refusing to write") as error:
        write_file(target, b"mask", replace=True)
    assert str(error.value).startswith(str(target))
    assert target.read_bytes() == b"a patient's scan" if exists else not target.exists()
    assert _litter(target.parent) == []


def test_a_link_to_a_scan_is_resolved_and_refused(tmp_path):
    scan = tmp_path / "B" / "BraTS2021_00002_flair.nii.gz"
    scan.parent.mkdir()
    scan.write_bytes(b"B's FLAIR")
    link = tmp_path / "my_mask.nii.gz"
    link.symlink_to(scan)
    with pytest.raises(SaveError, match="points to .*BraTS2021_00002_flair"):
        write_file(link, b"mask", replace=True)
    assert scan.read_bytes() == b"B's FLAIR" and link.is_symlink()
    assert scan_reason("mask_fused_mean.nii.gz") is None
    assert scan_reason("cam-flair.nii.gz") is None


def test_a_folder_swapped_for_a_link_mid_write_cannot_redirect_it(tmp_path):
    out, other_case = tmp_path / "out", tmp_path / "BraTS2021_00003"
    out.mkdir()
    other_case.mkdir()
    (other_case / "notes.nii.gz").write_bytes(b"B's file")

    def swap_then_write(handle):
        out.rename(tmp_path / "moved")
        out.symlink_to(other_case)
        handle.write(b"mask")

    write_file(out / "notes.nii.gz", swap_then_write, replace=True)
    assert (other_case / "notes.nii.gz").read_bytes() == b"B's file"
    assert (tmp_path / "moved" / "notes.nii.gz").read_bytes() == b"mask"


def test_an_existing_file_is_kept_unless_replacing_is_asked(tmp_path):
    target = tmp_path / "cam.json"
    write_json(target, {"run": 1})
    with pytest.raises(SaveError, match="already exists; nothing was replaced"):
        write_json(target, {"run": 2})
    assert json.loads(target.read_text()) == {"run": 1}
    write_json(target, {"run": 2}, replace=True)
    assert json.loads(target.read_text()) == {"run": 2}
    assert target.stat().st_mode & 0o044 == 0o044


def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"old": True})
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))  # writes past 4 KiB: EFBIG
    try:
        with pytest.raises(SaveError, match="cannot write") as error:
            write_json(target, {"big": "x" * 10_000}, replace=True)
        with (
            pytest.raises(SaveError, match="cannot write"),
            folder_in_place(tmp_path / "cache") as work,
        ):
            (work / "images.npy").write_bytes(b"x" * 10_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    assert str(target) in str(error.value)
    assert json.loads(target.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_two_runs_never_share_a_new_folder(tmp_path):
    first, second = new_folder(tmp_path / "case"), new_folder(tmp_path / "case")
    assert (first.name, second.name) == ("case", "case_2")
    (first / "x").write_text("1")
    with pytest.raises(SaveError, match="already holds files"), folder_in_place(first):
        pass
    assert (first / "x").read_text() == "1"
