"""The second stage: pseudo-mask targets, a short training run, its checkpoint."""

import json

import numpy as np
import pytest
import torch

from equicam.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from equicam.core.inference import cam_volume, run_to_end
from equicam.core.mask_edit import grow
from equicam.core.model import ModelConfig, MultiModalCAM
from equicam.core.refine import apply_protocol
from equicam.core.segnet import (
    SegConfig,
    SegNet,
    load_segnet,
    pseudo_targets,
    save_segnet,
    segment_volume,
    with_context,
    with_slice_labels,
)
from equicam.core.segnet_fit import size_choices, slice_loss
from training.data import SliceCache
from training.train_segnet import GUIDED_BAND_MM, main, pseudo_labelled, teacher_labelled


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


def test_slice_labels_clear_healthy_slices_and_leave_out_missed_tumours():
    target = np.zeros((3, 4, 4), np.uint8)
    target[0, 1, 1] = 1  # a pseudo-mask on a slice labelled healthy
    target[2, 2, 2] = 1  # and on a tumour slice
    weight = np.full(target.shape, 0.5, np.float32)
    new_target, new_weight = with_slice_labels(target, weight, np.array([0, 1, 1]))
    assert not new_target[0].any() and (new_weight[0] == 1).all()  # healthy throughout
    assert (new_weight[1] == 0).all()  # a tumour the pseudo-mask missed: left out
    np.testing.assert_array_equal(new_target[2], target[2])
    np.testing.assert_array_equal(new_weight[2], weight[2])
    assert target[0, 1, 1] == 1 and weight[1, 0, 0] == 0.5  # the inputs are left as they were


def test_slice_loss_is_low_when_tumour_slices_hold_tumour_pixels_and_pulls_only_their_top():
    logits = torch.zeros(2, 2, 8, 8)
    logits[:, 1] = -6.0  # every pixel healthy...
    logits[0, 1, 3, 3:5] = 6.0  # ...but two on the first slice
    labels = torch.tensor([1, 0])
    assert float(slice_loss(logits, labels, pixels=2)) < 0.01
    assert float(slice_loss(logits, labels.flip(0), pixels=2)) > 5.0
    missed = torch.full((1, 2, 8, 8), -1.0)
    missed[0, 1, 0, :4] = 0.0  # the four highest pixels of a missed tumour slice
    missed.requires_grad_(True)
    slice_loss(missed, torch.tensor([1]), pixels=4).backward()
    pulled = missed.grad[0, 1] < 0  # gradient descent raises their tumour logit
    assert pulled[0, :4].all() and pulled.sum() == 4


def test_a_short_run_lowers_its_loss_and_writes_a_loadable_checkpoint(
    tiny_cache, tmp_path, capsys
):
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
    n_train = len(SliceCache(tiny_cache, "train", ("t1",)).case_ids)
    printed = capsys.readouterr().out
    assert printed.count("pseudo-masks ") == n_train and f"{n_train}/{n_train}" in printed
    losses = json.loads((out / "losses.json").read_text())
    assert len(losses) == 60 and np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    model, meta = load_segnet(path)
    assert meta["kind"] == "segnet" and 0 < meta["threshold"] < 1
    assert tuple(meta["input_sizes"]) in size_choices(32) and model.input_sizes == tuple(
        meta["input_sizes"]
    )
    images, _ = SliceCache(tiny_cache, "test", model.config.modalities).case_slices("P5")
    volume = {m: images[:, i] for i, m in enumerate(model.config.modalities)}
    prob = segment_volume(model, volume)
    assert prob.shape == images[:, 0].shape and prob.min() >= 0 and prob.max() <= 1
    with pytest.raises(SystemExit):  # never over a checkpoint already there
        main(args)
    with pytest.raises(CheckpointError, match="not a second-stage"):
        load_segnet(cam_path)


def _leaning_cam(tmp_path, protocol: str, settings: dict):
    """A tiny CAM model that leans towards "tumour", saved with the same protocol settings for
    each sequence's map and the fused mean."""
    torch.manual_seed(0)
    cam = MultiModalCAM(ModelConfig(widths=(4, 8, 8, 8), input_size=32)).eval()
    with torch.no_grad():  # lean towards "tumour" so that maps are not all gated away
        for net in cam.nets.values():
            net.head.weight[1] += 0.3
    maps = dict.fromkeys((*cam.modalities, "fused_mean"), settings)
    entry = {"z_sigma_mm": 0.0, "gate": 0.5, "maps": maps}
    return cam, save_checkpoint(tmp_path / "cam.safetensors", cam, {protocol: entry})


def test_guided_targets_are_the_protocols_masks_with_their_edge_ignored(tiny_cache, tmp_path):
    settings = {"threshold": 0.3, "guide": "flair", "guide_z": 1.0, "guide_reach_mm": 0.0}
    cam, path = _leaning_cam(tmp_path, "guided", settings)
    _, meta = load_checkpoint(path)
    data = SliceCache(tiny_cache, "train", cam.modalities)
    _, targets, weights = pseudo_labelled(cam, meta, data, "fused_mean", 1, "cpu", "guided")
    expected, edges = [], []
    for case_id in data.case_ids:
        images, _ = data.case_slices(case_id)
        volume = {m: images[:, i] for i, m in enumerate(cam.modalities)}
        spacing = data.case_spacing(case_id)
        result = run_to_end(cam_volume(cam, volume, fusions=("mean",)))
        _, masks, _ = apply_protocol(result, "guided", meta, spacing, images=volume)
        mask = masks["fused_mean"] > 0
        expected.append(mask)
        edges.append(grow(mask, spacing, GUIDED_BAND_MM) & ~mask)
    expected, edges = np.concatenate(expected), np.concatenate(edges)
    assert expected.any() and edges.any()
    np.testing.assert_array_equal(targets, expected)
    np.testing.assert_array_equal(weights == 0, edges)  # the edge alone is ignored
    assert set(np.unique(weights)) == {0.0, 1.0}


def test_a_guided_augmented_run_records_what_it_learnt_from(tiny_cache, tmp_path):
    settings = {"threshold": 0.3, "guide": "flair", "guide_z": 1.0, "guide_reach_mm": 0.0}
    _, cam_path = _leaning_cam(tmp_path, "guided", settings)
    out = tmp_path / "second"
    args = ["--cache", str(tiny_cache), "--cam", str(cam_path), "--out", str(out)]
    args += ["--protocol", "guided", "--augment", "0.5", "--steps", "60"]
    args += ["--widths", "4,8,8,8", "--input-size", "32", "--device", "cpu"]
    args += ["--slice-labels", "--slice-loss", "0.5"]
    _, meta = load_segnet(main(args))
    losses = json.loads((out / "losses.json").read_text())
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    trained_on = meta["trained_on"]
    assert trained_on["protocol"] == "guided" and trained_on["augment"] == 0.5
    assert trained_on["slice_labels"] is True and trained_on["slice_loss"] == 0.5


def test_a_second_round_learns_the_first_ones_masks_corrected_by_the_slice_labels(
    tiny_cache, tmp_path
):
    torch.manual_seed(0)
    first = SegNet(SegConfig(widths=(4, 8, 8, 8), input_size=32)).eval()
    data = SliceCache(tiny_cache, "train", first.config.modalities)
    probs, labels = [], []
    for case_id in data.case_ids:
        images, _ = data.case_slices(case_id)
        volume = {m: images[:, i] for i, m in enumerate(data.modalities)}
        probs.append(segment_volume(first, volume))
        labels.append(data.case_labels(case_id))
    probs, labels = np.concatenate(probs), np.concatenate(labels)
    threshold = float(np.quantile(probs[probs > 0], 0.8))  # a random network's top fifth
    _, targets, weights = teacher_labelled(first, threshold, data, 1, "cpu", slice_labels=True)
    kept = (labels == 1) & (probs >= threshold).any(axis=(1, 2))
    assert kept.any() and (labels == 0).any()
    np.testing.assert_array_equal(targets[kept], probs[kept] >= threshold)
    assert (weights[kept][targets[kept] == 1] == 1).all()
    assert not targets[labels == 0].any() and (weights[labels == 0] == 1).all()

    path = save_segnet(tmp_path / "first.safetensors", first, {"threshold": threshold})
    args = ["--cache", str(tiny_cache), "--cam", str(path), "--out", str(tmp_path / "second")]
    args += ["--slice-labels", "--steps", "20", "--widths", "4,8,8,8", "--input-size", "32"]
    _, meta = load_segnet(main([*args, "--device", "cpu"]))
    assert meta["trained_on"]["map"] == "second_stage"
    assert meta["trained_on"]["protocol"] == "threshold"
