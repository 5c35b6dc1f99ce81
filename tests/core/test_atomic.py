"""The safe-write module, with real faults: a SIGKILL mid-save, a full disk, a swapped folder."""

import json
from pathlib import Path

import pytest

from equicam.core.atomic import (
    TEMP_SUFFIX,
    SaveError,
    building,
    folder_in_place,
    new_folder,
    place_new,
    scan_reason,
    write_file,
    write_json,
)
from tests.hostile.common import disk_full_past, kill_mid_save


def _litter(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


def test_a_save_killed_midway_leaves_the_old_file_and_the_next_save_cleans_up(tmp_path):
    target = tmp_path / "last_state.pt"
    target.write_bytes(b"old state")
    kill_mid_save("file", target)
    assert target.read_bytes() == b"old state"
    assert len(_litter(tmp_path)) == 1  # the killed run's temporary, fully written or not
    write_file(target, b"next state", replace=True)
    assert target.read_bytes() == b"next state"
    assert _litter(tmp_path) == []


def test_a_folder_build_killed_midway_leaves_nothing_named_and_is_cleaned(tmp_path):
    target = tmp_path / "cache"
    kill_mid_save("folder", target)
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
    with disk_full_past(4096)():  # writes past 4 KiB fail (EFBIG)
        with pytest.raises(SaveError, match="cannot write") as error:
            write_json(target, {"big": "x" * 10_000}, replace=True)
        with (
            pytest.raises(SaveError, match="cannot write"),
            folder_in_place(tmp_path / "cache") as work,
        ):
            (work / "images.npy").write_bytes(b"x" * 10_000)
        with (
            pytest.raises(SaveError, match="cannot write") as named,
            building(tmp_path / "run") as work,
        ):
            write_json(work / "cam.json", {"big": "x" * 10_000})
            place_new(work, tmp_path / "run")
    assert str(target) in str(error.value)
    # named where the user will look for it, not by the temporary folder's name
    assert str(named.value).startswith(f"{tmp_path / 'run' / 'cam.json'}: ")
    assert json.loads(target.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_two_runs_never_share_a_new_folder(tmp_path):
    first, second = new_folder(tmp_path / "case"), new_folder(tmp_path / "case")
    assert (first.name, second.name) == ("case", "case_2")
    (first / "x").write_text("1")
    with pytest.raises(SaveError, match="already holds files"), folder_in_place(first):
        pass
    assert (first / "x").read_text() == "1"
    with building(tmp_path / "case") as work:
        (work / "cam.json").write_text("3")
        third = place_new(work, tmp_path / "case")
    assert third.name == "case_3" and (third / "cam.json").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case", "case_2", "case_3"]
