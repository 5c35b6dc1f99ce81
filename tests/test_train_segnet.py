"""The second stage: pseudo-mask targets, a short training run, its checkpoint."""

import json

import numpy as np
import pytest
import torch

from equicam.core.checkpoint import CheckpointError, save_checkpoint
from equicam.core.model import ModelConfig, MultiModalCAM
from equicam.core.segnet import load_segnet, pseudo_targets, segment_volume, with_context
from training.data import SliceCache
from training.train_segnet import main


def test_context_stacks_neighbours_and_repeats_the_edges():
    volume = np.arange(4)[:, None, None, None] * np.ones((4, 2, 3, 3))
    volume[:, 1] += 10  # second sequence
    stacked = with_context(volume, 1)
    assert stacked.shape == (4, 6, 3, 3)
    np.testing.assert_array_equal(stacked[0, :, 0, 0], [0, 10, 0, 10, 1, 11])
    np.testing.assert_array_equal(stacked[3, :, 0, 0], [2, 12, 3, 13, 3, 13])


def test_pseudo_targets_weight_by_confidence_and_ignore_the_grown_band():
    core = np.zeros((1, 5, 5), bool)
    core[0, 2, 2] = True
    mask = core.copy()
    mask[0, 1:4, 1:4] = True
    confidence = np.full(core.shape, 0.7, np.float32)
    target, weight = pseudo_targets(mask, core, confidence)
    assert target.sum() == 1 and target[0, 2, 2] == 1
    assert weight[0, 2, 2] == pytest.approx(0.7)
    assert (weight[0, 1:4, 1:4].sum() - weight[0, 2, 2]) == 0  # the band is ignored
    assert weight[0, 0, 0] == 1.0


def test_a_short_run_lowers_its_loss_and_writes_a_loadable_checkpoint(tiny_cache, tmp_path):
    torch.manual_seed(0)
    cam = MultiModalCAM(ModelConfig(widths=(4, 8, 8, 8), input_size=32)).eval()
    with torch.no_grad():  # lean towards "tumour" so that maps are not all gated away
        for net in cam.nets.values():
            net.head.weight[1] += 0.3
    settings = {"threshold": 0.5, "largest_only": True, "min_component_mm3": 0.0, "grow_mm": 2.0}
    refined = {"z_sigma_mm": 0.0, "gate": 0.5, "maps": {"fused_mean": settings}}
    cam_path = save_checkpoint(tmp_path / "cam.safetensors", cam, {"refined": refined})
    out = tmp_path / "second"
    args = ["--cache", str(tiny_cache), "--cam", str(cam_path), "--out", str(out)]
    args += ["--steps", "60", "--widths", "4,8,8,8", "--input-size", "32", "--device", "cpu"]
    path = main(args)
    losses = json.loads((out / "losses.json").read_text())
    assert len(losses) == 60 and np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    model, meta = load_segnet(path)
    assert meta["kind"] == "segnet" and 0 < meta["threshold"] < 1
    images, _ = SliceCache(tiny_cache, "test", model.config.modalities).case_slices("P5")
    volume = {m: images[:, i] for i, m in enumerate(model.config.modalities)}
    prob = segment_volume(model, volume)
    assert prob.shape == images[:, 0].shape and prob.min() >= 0 and prob.max() <= 1
    with pytest.raises(SystemExit):  # never over a checkpoint already there
        main(args)
    with pytest.raises(CheckpointError, match="not a second-stage"):
        load_segnet(cam_path)
