"""A second stage as a model choice of `equicam cam` and `equicam evaluate`."""

import json

import nibabel as nib
import numpy as np
import pytest

from equicam.cli import main
from equicam.core.brats import load_case
from equicam.core.checkpoint import load_model
from equicam.core.metrics import dice
from equicam.core.model import MultiModalCAM
from equicam.core.segnet import SegNet


def test_the_checkpoint_kind_is_read_from_its_metadata(tiny_segnet, tmp_path):
    renamed = tmp_path / "equivariant_copy.safetensors"  # a name says nothing
    renamed.write_bytes(tiny_segnet.read_bytes())
    model, meta = load_model(renamed)
    assert isinstance(model, SegNet) and meta["kind"] == "segnet"
    assert isinstance(load_model("equivariant")[0], MultiModalCAM)


def test_cam_and_evaluate_run_a_second_stage(tiny_segnet, synthetic_cases, tmp_path, capsys):
    case = synthetic_cases / "BraTS2021_00000"
    out = tmp_path / "cam"
    assert main(["cam", str(case), "--checkpoint", str(tiny_segnet), "--out", str(out)]) == 0
    written = out / case.name
    assert sorted(p.name for p in written.iterdir()) == [
        "cam-second_stage.nii.gz",
        "cam.json",
        "mask-second_stage.nii.gz",
    ]
    provenance = json.loads((written / "cam.json").read_text())
    assert provenance["model_kind"] == "segnet" and provenance["method"] == "segnet"
    assert provenance["protocol"] == "threshold"
    assert provenance["thresholds"] == {"second_stage": 0.5}
    probability = np.asarray(nib.load(written / "cam-second_stage.nii.gz").dataobj)
    mask = nib.load(written / "mask-second_stage.nii.gz")
    assert probability.min() >= 0 and probability.max() <= 1 and probability.max() > 0
    np.testing.assert_array_equal(np.asarray(mask.dataobj), probability >= 0.5)
    assert mask.header["descrip"].item() == b"equicam protocol=threshold map=second_stage run=seg"

    report = tmp_path / "eval"
    argv = ["evaluate", str(synthetic_cases), "--checkpoint", str(tiny_segnet)]
    assert main([*argv, "--out", str(report)]) == 0
    results = json.loads((report / "results.json").read_text())
    assert results["model_kind"] == "segnet" and results["protocol"] == "threshold"
    assert list(results["summary"]) == ["second_stage"]
    assert results["summary"]["second_stage"]["threshold"] == 0.5
    loaded = load_case(case)
    shown = loaded.geometry.to_display(np.asarray(mask.dataobj))
    assert results["per_case"][case.name]["second_stage"]["dice"] == pytest.approx(
        dice(shown, loaded.whole_tumour)
    )

    capsys.readouterr()
    refused = main([*argv, "--out", str(tmp_path / "no"), "--protocol", "refined"])
    assert refused == 2
    assert "is a second stage" in capsys.readouterr().err
