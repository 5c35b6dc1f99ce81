"""Calibration: thresholds and fusion weights chosen on validation patients."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from equicam.core.checkpoint import load_checkpoint, save_checkpoint
from equicam.core.inference import CamResult, cam_volume, run_to_end
from equicam.core.metrics import dice
from equicam.core.model import ModelConfig, MultiModalCAM
from equicam.core.refine import Refinement, apply_protocol, refined_mask
from training.calibrate import calibrate, calibrate_guided, weight_grid
from training.data import SliceCache


def test_the_weight_grid_sums_to_one_and_holds_the_mean_and_each_sequence():
    grid = weight_grid(("t1", "t1ce", "t2", "flair"))
    assert len(grid) == 35
    assert all(abs(sum(w.values()) - 1) < 1e-12 for w in grid)
    assert {"t1": 0.25, "t1ce": 0.25, "t2": 0.25, "flair": 0.25} in grid
    assert {"t1": 0.0, "t1ce": 0.0, "t2": 0.0, "flair": 1.0} in grid


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = MultiModalCAM(ModelConfig(widths=(4, 8, 8, 8), input_size=32)).eval()
    with torch.no_grad():  # lean towards "tumour" so that maps are not all gated away
        for net in model.nets.values():
            net.head.weight[1] += 0.3
    return model


def test_weighted_fusion_is_at_least_as_good_as_the_mean_and_every_sequence(
    tiny_cache, tiny_model
):
    chosen = calibrate(tiny_model, SliceCache(tiny_cache, "val", tiny_model.modalities), "cpu")
    dice = {name: v["dice"] for name, v in chosen["maps"].items()}
    rivals = [dice["fused_mean"], *(dice[m] for m in tiny_model.modalities)]
    assert dice["fused_weighted"] >= max(rivals) - 1e-6  # the grid holds each of them
    assert abs(sum(chosen["fusion_weights"].values()) - 1) < 1e-12
    assert chosen["maps"]["fused_weighted"]["threshold"] in np.round(np.arange(0.2, 0.81, 0.1), 2)


def test_the_command_writes_a_new_calibrated_checkpoint_and_never_its_input(
    tiny_cache, tiny_model, tmp_path
):
    source = save_checkpoint(tmp_path / "model.safetensors", tiny_model, {"threshold": 0.5})
    before = source.read_bytes()
    command = [sys.executable, "-m", "training.calibrate", str(source), "--cache", str(tiny_cache)]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "cal.safetensors")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    model, meta = load_checkpoint(tmp_path / "cal.safetensors")
    assert (
        model.fusion_weights == meta["fusion_weights"] and "fused_weighted" in meta["thresholds"]
    )
    assert meta["calibrated_on"]["val_cases"] == 1
    assert meta["protocol"] in ("paper", "refined", "guided")
    assert set(meta["refined"]["maps"]) == set(meta["guided"]["maps"]) == set(meta["thresholds"])
    refused = subprocess.run([*command, "--out", str(source)], capture_output=True, text=True)
    assert refused.returncode != 0 and "refusing to overwrite" in refused.stderr
    assert source.read_bytes() == before
    corrected = save_checkpoint(
        tmp_path / "bc.safetensors", tiny_model, {"threshold": 0.5, "bias_correction": True}
    )
    command[3] = str(corrected)
    refused = subprocess.run(
        [*command, "--out", str(tmp_path / "bc_cal.safetensors")], capture_output=True, text=True
    )
    assert refused.returncode != 0 and not (tmp_path / "bc_cal.safetensors").exists()
    assert f"{tiny_cache}: prepared without bias-field correction" in refused.stderr
    corrected_cache = tmp_path / "bc_cache"
    shutil.copytree(tiny_cache, corrected_cache)
    meta = json.loads((corrected_cache / "meta.json").read_text())
    (corrected_cache / "meta.json").write_text(json.dumps({**meta, "bias_correction": True}))
    command = [*command[:3], str(source), "--cache", str(corrected_cache)]
    refused = subprocess.run(
        [*command, "--out", str(tmp_path / "bc_cal.safetensors")], capture_output=True, text=True
    )
    assert "or calibrate with --bias-correction" in refused.stderr
    adopted = subprocess.run(
        [*command, "--bias-correction", "--out", str(tmp_path / "bc_cal.safetensors")],
        capture_output=True,
        text=True,
    )
    assert adopted.returncode == 0, adopted.stderr
    assert load_checkpoint(tmp_path / "bc_cal.safetensors")[1]["bias_correction"] is True


@pytest.mark.parametrize("protocol", ["refined", "guided"])
def test_protocol_settings_score_on_validation_what_the_protocol_then_gives(
    tiny_cache, tiny_model, protocol
):
    splits = [SliceCache(tiny_cache, split, tiny_model.modalities) for split in ("val", "test")]
    chosen = calibrate(tiny_model, splits, "cpu", refine=True)
    settings = chosen[protocol]
    assert set(settings["maps"]) == set(chosen["maps"])
    fused_mean = {p: chosen[p]["maps"]["fused_mean"]["dice"] for p in ("refined", "guided")}
    fused_mean["paper"] = chosen["maps"]["fused_mean"]["dice"]
    assert fused_mean[chosen["protocol"]] == max(fused_mean.values())
    if protocol == "guided":
        assert {s["guide"] for s in settings["maps"].values()} <= {"flair", "t2"}
    tiny_model.fusion_weights = chosen["fusion_weights"]
    dices = {name: [] for name in settings["maps"]}
    for split in splits:
        for case_id in split.case_ids:
            images, truth = split.case_slices(case_id)
            volume = {m: images[:, i] for i, m in enumerate(tiny_model.modalities)}
            fusions = ("mean", "max", "geometric", "weighted")
            result = run_to_end(cam_volume(tiny_model, volume, fusions=fusions))
            _, masks, _ = apply_protocol(
                result,
                protocol,
                {protocol: settings},
                split.case_spacing(case_id),
                weights=tiny_model.fusion_weights,
                images=volume,
            )
            for name in dices:
                dices[name].append(dice(masks[name], truth))
    for name, map_settings in settings["maps"].items():
        assert map_settings["dice"] == pytest.approx(np.mean(dices[name]))


def test_guided_calibration_keeps_the_strongest_seed_when_a_mimic_lights_up_too():
    # The CAM peaks on the lesion (1.0) and lights a bright mimic at 0.9, above every
    # threshold the search tries: only the seed's strongest component separates them.
    shape, spacing = (6, 20, 20), (1.0, 1.0, 1.0)
    raw = np.zeros(shape, np.float32)
    raw[2:4, 4:6, 4:6] = 1.0
    raw[2:4, 14:16, 14:16] = 0.9
    flair = np.zeros(shape, np.float32)
    flair[1:5, 2:8, 2:8] = 2.5
    flair[1:5, 12:18, 12:18] = 2.5
    truth = np.zeros(shape, bool)
    truth[1:5, 2:8, 2:8] = True
    result = CamResult(
        "cam",
        {},
        {},
        {"flair": np.ones(shape[0], np.float32)},
        raw={"flair": raw},
        brain=flair > 0,
    )
    chosen = calibrate_guided([(result, truth, spacing)], [{"flair": flair}], None)
    settings = chosen["maps"]["flair"]
    assert settings["strongest_only"] is True and settings["dice"] == 1.0
    stored = Refinement.from_dict(chosen).mask_settings("flair")
    mask = refined_mask(raw, flair > 0, spacing, stored, {"flair": flair})
    assert np.array_equal(mask, truth)


def _lesion_and_mimic(mimic, slice_prob):
    """``(cases, scans)`` of one patient of 40 slices, 1 mm voxels, whose only map and guide is
    FLAIR: a lesion on slices 15-24 at 0.9 on the map, a mimic at ``mimic`` at its peak (1.0),
    both bright on FLAIR; ``slice_prob`` is the classifier's tumour probability per slice."""
    shape = (40, 20, 20)
    raw, truth = np.zeros(shape, np.float32), np.zeros(shape, bool)
    truth[15:25, 4:10, 4:10] = True
    raw[truth] = 0.9
    raw[mimic] = 1.0
    flair = np.where(raw > 0, 2.5, 0.0).astype(np.float32)
    result = CamResult("cam", {}, {}, {"flair": slice_prob}, raw={"flair": raw}, brain=flair > 0)
    return [(result, truth, (1.0, 1.0, 1.0))], [{"flair": flair}]


def test_guided_calibration_chooses_the_gate_that_drops_a_mimic_on_doubted_slices():
    # The mimic lies on slices the classifier gives 0.6: only a gate of 0.7 without smoothing
    # (smoothing also dims the lesion's slices) leaves the lesion alone.
    slice_prob = np.full(40, 0.1, np.float32)
    slice_prob[15:25], slice_prob[30:35] = 0.9, 0.6
    chosen = calibrate_guided(*_lesion_and_mimic(np.s_[30:35, 12:18, 12:18], slice_prob), None)
    assert (chosen["z_sigma_mm"], chosen["gate"]) == (0.0, 0.7)
    assert chosen["maps"]["flair"]["dice"] == 1.0


def test_guided_calibration_gives_a_near_tie_to_the_gate_without_smoothing():
    # A one-voxel mimic on the first slice: smoothing the slice gate drops it (Dice 1.0),
    # without smoothing the whole seed keeps it (Dice 720/721), within the tolerance.
    chosen = calibrate_guided(*_lesion_and_mimic(np.s_[0, 15, 15], np.ones(40)), None)
    assert chosen["z_sigma_mm"] == 0.0
    assert chosen["maps"]["flair"]["dice"] == pytest.approx(720 / 721)


def test_the_command_chooses_a_second_stages_sizes_and_threshold(
    tiny_cache, tiny_segnet, tmp_path
):
    from equicam.core.segnet import load_segnet
    from equicam.core.segnet_fit import THRESHOLDS, size_choices

    before = tiny_segnet.read_bytes()
    command = [
        sys.executable,
        "-m",
        "training.calibrate",
        str(tiny_segnet),
        "--cache",
        str(tiny_cache),
    ]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "cal.safetensors")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    model, meta = load_segnet(tmp_path / "cal.safetensors")
    assert tuple(meta["input_sizes"]) in size_choices(32)
    assert model.input_sizes == tuple(meta["input_sizes"]) and meta["threshold"] in THRESHOLDS
    assert meta["calibrated_on"]["val_cases"] == 1 and 0 <= meta["val_dice"] <= 1
    assert f"input sizes {meta['input_sizes']}" in done.stdout
    refused = subprocess.run([*command, "--out", str(tiny_segnet)], capture_output=True, text=True)
    assert refused.returncode != 0 and "refusing to overwrite" in refused.stderr
    assert tiny_segnet.read_bytes() == before
