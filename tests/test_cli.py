"""The `equicam` command line: instant help, subcommands, errors that name the file."""

import contextlib
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from equicam.cli import main


def test_help_does_not_import_torch_or_qt():
    code = (
        "import sys, contextlib, io\n"
        "from equicam.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "assert 'synth' in out.getvalue() and 'evaluate' in out.getvalue()\n"
        "print(sorted(m for m in ('torch', 'napari', 'qtpy', 'nibabel') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_synth_then_prepare_through_the_command_line(tmp_path, capsys):
    assert (
        main(["synth", str(tmp_path / "data"), "--cases", "3", "--seed", "5", "--size", "small"])
        == 0
    )
    cases = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert cases == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"]
    for name in ("t1", "t1ce", "t2", "flair", "seg"):
        assert (tmp_path / "data" / cases[0] / f"{cases[0]}_{name}.nii.gz").is_file()

    assert (
        main(["prepare", str(tmp_path / "data"), "--out", str(tmp_path / "cache"), "--size", "32"])
        == 0
    )
    assert "cached" in capsys.readouterr().out
    splits = [
        (tmp_path / "cache" / "splits" / f"{s}.txt").read_text().split()
        for s in ("train", "val", "test")
    ]
    assert sorted(sum(splits, [])) == cases
    argv = ["prepare", str(tmp_path / "data"), "--out", str(tmp_path / "bc"), "--size", "32"]
    assert main([*argv, "--bias-correction"]) == 0
    assert json.loads((tmp_path / "bc" / "meta.json").read_text())["bias_correction"] is True


def test_bad_input_exits_2_with_the_file_named(tmp_path, capsys):
    case = tmp_path / "BraTS2021_00009"
    case.mkdir()
    for name in ("t1ce", "t2", "flair", "seg"):
        volume = np.full((4, 4, 4), name != "seg", np.int16)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), case / f"BraTS2021_00009_{name}.nii.gz")
    flat = np.ones((4, 4), np.int16)
    nib.save(nib.Nifti1Image(flat, np.eye(4)), case / "BraTS2021_00009_t1.nii.gz")
    assert main(["prepare", str(tmp_path), "--out", str(tmp_path / "cache")]) == 2
    error = capsys.readouterr().err
    assert "BraTS2021_00009_t1.nii.gz" in error and "3-D" in error


def test_checkpoint_help_lists_the_bundled_models_and_a_typo_gets_the_close_name(capsys):
    from equicam.cli import BUNDLED as LISTED
    from equicam.core.checkpoint import BUNDLED

    assert LISTED == BUNDLED
    with contextlib.suppress(SystemExit):
        main(["cam", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "equivariant, baseline" in shown and "(default equivariant)" in shown
    assert "Grad-CAM++" in shown

    with pytest.raises(SystemExit) as exit_:
        main(["cam", "case", "--out", "out", "--checkpoint", "equivarient"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "did you mean 'equivariant'?" in error and "equivarient" in error


def test_debug_shows_the_traceback_instead_of_one_line(tmp_path, capsys):
    from equicam.core.brats import CaseError

    argv = ["prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "cache")]
    assert main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1
    for debug in (["--debug", *argv], [*argv, "--debug"]):
        with pytest.raises(CaseError, match="missing: not a folder"):
            main(debug)
    assert not (tmp_path / "cache").exists()
