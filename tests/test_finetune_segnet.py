"""Learning from corrections: a second stage fine-tuned on two corrected cases on disk."""

import shutil

import numpy as np
import pytest

from equicam.core.brats import load_case, save_volume
from equicam.core.checkpoint import BUNDLED_DIR
from equicam.core.segnet import load_segnet
from equicam.core.segnet_fit import mean_loss
from equicam.plugin.cases import corrected_cases
from training.finetune_segnet import main


@pytest.fixture
def corrected(synthetic_cases, tmp_path):
    """Cases 0 and 6, each with a saved mask (the whole tumour: a full correction), and the
    tumour-free case 9 with none."""
    folder = tmp_path / "corrected"
    for name in ("BraTS2021_00000", "BraTS2021_00006", "BraTS2021_00009"):
        shutil.copytree(synthetic_cases / name, folder / name)
    for name in ("BraTS2021_00000", "BraTS2021_00006"):
        case = load_case(folder / name)
        path = folder / name / f"{name}_mask_second_stage.nii.gz"
        save_volume(case.whole_tumour.astype("uint8"), case.geometry, path)
    return folder


def test_fine_tuning_lowers_the_loss_on_the_corrections_and_writes_a_new_checkpoint(
    corrected, tiny_segnet, tmp_path, capsys
):
    before = tiny_segnet.read_bytes()
    model, _ = load_segnet(tiny_segnet)
    cases, sources = corrected_cases(corrected, model.modalities)
    assert [s.split("/")[-2] for s in sources] == ["BraTS2021_00000", "BraTS2021_00006"]
    start = mean_loss(model, cases)
    out = tmp_path / "tuned.safetensors"
    args = ["--cases", str(corrected), "--segnet", str(tiny_segnet), "--out", str(out)]
    summary = main([*args, "--steps", "40", "--lr", "1e-3", "--device", "cpu"])
    assert summary["loss_before"] == pytest.approx(start)
    assert summary["loss_after"] < 0.95 * summary["loss_before"]  # 0.69 -> 0.61 here
    tuned, meta = load_segnet(out)
    assert meta["kind"] == "segnet" and 0 < meta["threshold"] < 1
    assert meta["fine_tuned"]["cases"] == sources
    assert mean_loss(tuned, cases) == pytest.approx(summary["loss_after"], rel=1e-4)
    assert tiny_segnet.read_bytes() == before  # the input stays as it was
    assert "wrote" in capsys.readouterr().out

    for taken in (out, tiny_segnet):  # never over a file, the input included
        with pytest.raises(SystemExit):
            main(["--cases", str(corrected), "--segnet", str(tiny_segnet), "--out", str(taken)])
        assert "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nor beside the bundled checkpoints
        main([*args[:4], "--out", str(BUNDLED_DIR / "tuned.safetensors")])
    assert "installed package" in capsys.readouterr().err
    assert not (BUNDLED_DIR / "tuned.safetensors").exists()


def test_the_bundled_second_stage_is_fine_tuned_by_its_name(corrected, tmp_path):
    from equicam.core.segnet_fit import size_choices

    out = tmp_path / "tuned.safetensors"
    args = ["--cases", str(corrected), "--segnet", "second-stage", "--out", str(out)]
    summary = main([*args, "--steps", "2", "--device", "cpu"])
    model, meta = load_segnet(out)
    assert summary["path"] == out and meta["fine_tuned"]["from"] == "second-stage"
    assert model.input_sizes == tuple(meta["input_sizes"]) and meta["input_sizes"] in [
        list(sizes) for sizes in size_choices(96)
    ]


def test_a_second_stage_of_corrected_scans_learns_from_corrected_scans(
    corrected, tiny_segnet, tmp_path
):
    from equicam.core.segnet import save_segnet

    model, meta = load_segnet(tiny_segnet)
    source = save_segnet(tmp_path / "bc.safetensors", model, {**meta, "bias_correction": True})
    plain = corrected_cases(corrected, model.modalities)[0]
    fixed = corrected_cases(corrected, model.modalities, bias_correction=True)[0]
    assert np.abs(fixed[0][0]["flair"] - plain[0][0]["flair"]).mean() > 0.01
    out = tmp_path / "tuned.safetensors"
    args = ["--cases", str(corrected), "--segnet", str(source), "--out", str(out)]
    summary = main([*args, "--steps", "1", "--device", "cpu"])
    # the untrained tiny network's loss hardly depends on its input, but it does, to the bit
    assert summary["loss_before"] == mean_loss(model, fixed) != mean_loss(model, plain)
    assert load_segnet(out)[1]["bias_correction"] is True
