"""A second stage as a model choice of `equicam cam` and `equicam evaluate`."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from equicam.cli import main
from equicam.core.brats import load_case
from equicam.core.checkpoint import load_model
from equicam.core.metrics import dice
from equicam.core.model import MultiModalCAM
from equicam.core.preprocess import from_input, to_input
from equicam.core.segnet import (
    SegConfig,
    SegNet,
    load_segnet,
    save_segnet,
    segment_volume,
    with_context,
)
from equicam.core.segnet_fit import THRESHOLDS, best_setting, size_choices


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
    assert provenance["input_sizes"] == [32]
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
    assert results["input_sizes"] == [32]
    loaded = load_case(case)
    shown = loaded.geometry.to_display(np.asarray(mask.dataobj))
    assert results["per_case"][case.name]["second_stage"]["dice"] == pytest.approx(
        dice(shown, loaded.whole_tumour)
    )

    capsys.readouterr()
    refused = main([*argv, "--out", str(tmp_path / "no"), "--protocol", "refined"])
    assert refused == 2
    assert "is a second stage" in capsys.readouterr().err


@pytest.fixture
def sample_volumes(synthetic_cases):
    """(normalised volume, whole tumour) of cases 0 and 6 (tumour) and 9 (tumour-free)."""
    from equicam.core.evaluation import normalised_images

    cases = []
    for name in ("BraTS2021_00000", "BraTS2021_00006", "BraTS2021_00009"):
        case = load_case(synthetic_cases / name)
        cases.append((normalised_images(case, SegConfig().modalities), case.whole_tumour))
    return cases


def test_input_sizes_average_the_probabilities_and_travel_with_the_checkpoint(
    tiny_segnet, sample_volumes, tmp_path
):
    model, meta = load_segnet(tiny_segnet)
    assert model.input_sizes == (32,) and meta["input_sizes"] == [32]
    images = sample_volumes[0][0]
    alone = {}
    for size in (32, 48):
        model.input_sizes = (size,)
        alone[size] = segment_volume(model, images)
    assert np.abs(alone[32] - alone[48]).max() > 1e-3  # the size a slice is seen at matters
    volume = np.stack([images[m] for m in model.modalities], axis=1).astype(np.float32)
    x = torch.from_numpy(with_context(volume, model.config.context))
    with torch.no_grad():  # the network itself, not the folded channels-last copy that runs
        plain = torch.softmax(model.eval()(to_input(x, 48)), dim=1)[:, 1:]
    plain = from_input(plain, volume.shape[2:])[:, 0].numpy()
    brain = (volume != 0).any(axis=1)
    np.testing.assert_allclose(alone[48][brain], plain[brain], atol=1e-5)
    model.input_sizes = (32, 48)
    np.testing.assert_allclose(
        segment_volume(model, images), (alone[32] + alone[48]) / 2, atol=1e-6
    )
    path = save_segnet(tmp_path / "sized.safetensors", model, meta)
    assert load_segnet(path)[0].input_sizes == (32, 48)


def test_the_chosen_sizes_and_threshold_give_the_best_dice_they_report(
    tiny_segnet, sample_volumes
):
    assert size_choices(96) == [(96,), (96, 128), (96, 128, 160)]
    model, _ = load_segnet(tiny_segnet)
    chosen = best_setting(model, sample_volumes, "cpu")
    assert chosen["input_sizes"] in size_choices(32) and chosen["threshold"] in THRESHOLDS
    assert model.input_sizes == chosen["input_sizes"]
    tumour = [(v, t) for v, t in sample_volumes if t.any()]
    given = np.mean([dice(segment_volume(model, v) >= chosen["threshold"], t) for v, t in tumour])
    assert chosen["dice"] == pytest.approx(given, abs=1e-6)
    model.input_sizes = (32,)
    probabilities = [segment_volume(model, v) for v, _ in tumour]
    trained_size = max(
        np.mean([dice(p >= t, truth) for p, (_, truth) in zip(probabilities, tumour, strict=True)])
        for t in THRESHOLDS
    )
    assert chosen["dice"] >= trained_size - 1e-9  # the training size alone is one choice

    nothing = best_setting(model, sample_volumes[2:], "cpu")  # no patient with tumour
    assert nothing == {"input_sizes": (32,), "threshold": 0.5, "dice": None}


def test_a_second_stage_with_broken_weights_is_refused_by_name(tiny_segnet, tmp_path):
    from safetensors.torch import load_file, save_file

    from equicam.core.checkpoint import CheckpointError, read_metadata

    state = load_file(tiny_segnet)
    meta = {"equicam": json.dumps(read_metadata(tiny_segnet))}
    key = next(k for k, v in state.items() if v.is_floating_point())
    for name, value, phrase in [
        ("nan", torch.full_like(state[key], float("nan")), "non-finite weights .* " + key),
        ("shape", state[key][:1], "weights are for another architecture"),
    ]:
        broken = tmp_path / f"{name}.safetensors"
        save_file({**state, key: value}, broken, metadata=meta)
        with pytest.raises(CheckpointError, match=f"{name}.safetensors: {phrase}"):
            load_segnet(broken)
