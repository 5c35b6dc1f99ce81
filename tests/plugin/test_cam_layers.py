"""Output-layer bookkeeping without Qt: names, layer data, masks, volumes, metrics, paths."""

from pathlib import Path

import numpy as np

from equicam.core.brats import LAYER_NAMES
from equicam.core.checkpoint import BUNDLED
from equicam.core.fusion import FUSION_NAMES
from equicam.core.inference import METHOD_NAMES, CamResult
from equicam.core.metrics import hd95
from equicam.plugin.cam_layers import (
    cam_layer_name,
    cam_layers,
    compare_table,
    default_mask_path,
    mask_layer_name,
    pseudo_mask,
    run_label,
    volume_cm3,
)


def test_names_are_short_and_tell_runs_apart():
    assert run_label("equivariant", "cam") == "equivariant"
    assert run_label("baseline", "gradcampp") == "baseline, Grad-CAM++"
    assert mask_layer_name("fused_mean", "baseline, Grad-CAM") == "mask fused·mean base GC"
    assert (
        mask_layer_name("fused_mean", "baseline, Grad-CAM", full=True)
        == "mask fused mean (baseline, Grad-CAM)"
    )
    assert cam_layer_name("fused_weighted", "my_run") == "CAM fused·w my_run"
    maps = [*LAYER_NAMES, *(f"fused_{f}" for f in FUSION_NAMES)]
    runs = [run_label(m, k) for m in (*BUNDLED, "tiny") for k in METHOD_NAMES]
    for name_of in (cam_layer_name, mask_layer_name):
        names = [name_of(m, r) for m in maps for r in runs]
        assert len(set(names)) == len(names) == len(maps) * len(runs)
        assert max(len(n) for n in names) <= len("mask fused·mean base GC++")


def test_cam_layers_carry_the_scan_geometry_and_show_fused_maps_first():
    rng = np.random.default_rng(0)
    maps = {"flair": rng.random((3, 4, 5), dtype=np.float32)}
    result = CamResult("cam", maps, {"mean": maps["flair"]})
    meta = {"equicam": {"case_id": "C1", "modality": "flair"}}
    settings = {"flair": {"threshold": 0.4}, "fused_mean": {"threshold": 0.3}}
    layers = cam_layers(result.all_maps(), "equivariant", (2.0, 1.0, 1.0), meta, settings, "paper")
    names = [kwargs["name"] for _, kwargs, _ in layers]
    assert names == ["CAM FLAIR eq", "CAM fused·mean eq"]
    _, flair, kind = layers[0]
    assert kind == "image" and flair["scale"] == (2.0, 1.0, 1.0) and not flair["visible"]
    assert flair["metadata"]["equicam"] == {
        "case_id": "C1",
        "modality": "flair",
        "map": "flair",
        "run": "equivariant",
        "full_name": "CAM FLAIR (equivariant)",
        "protocol": "paper",
        "threshold": 0.4,
        "mask_settings": {"threshold": 0.4},
        "edited": False,
        "saved": True,
    }
    assert meta == {"equicam": {"case_id": "C1", "modality": "flair"}}  # the scan's is untouched


def test_masks_volumes_metrics_and_paths():
    cam = np.array([[[0.2, 0.5, 0.9]]], np.float32)
    np.testing.assert_array_equal(pseudo_mask(cam, 0.5), [[[0, 1, 1]]])
    assert pseudo_mask(cam, 0.5).dtype == np.uint8
    assert volume_cm3(np.ones((10, 10, 10)), (2.0, 1.0, 0.5)) == 1.0

    truth = np.zeros((6, 6, 6), np.uint8)
    truth[1:4, 1:4, 1:4] = 2  # any tumour label counts as whole tumour
    rows = compare_table({"same": truth > 0, "empty": np.zeros_like(truth)}, truth, (1, 1, 1))
    assert rows["mask"] == ["same", "empty"]
    assert rows["Dice"] == [1.0, 0.0] and rows["ASSD (mm)"][0] == 0.0
    assert rows["HD95 (mm)"][0] == 0.0

    shifted = np.roll(truth > 0, 2, axis=2)  # two voxels of 3 mm along the last axis
    rows = compare_table({"shifted": shifted}, truth, (1.0, 1.0, 3.0))
    assert rows["HD95 (mm)"] == [round(hd95(shifted, truth > 0, (1.0, 1.0, 3.0)), 2)]
    assert rows["HD95 (mm)"][0] >= rows["ASSD (mm)"][0] > 0

    info = {"case_folder": "/data/BraTS2021_00001", "case_id": "BraTS2021_00001"}
    expected = Path(
        "/data/BraTS2021_00001/BraTS2021_00001_mask_fused_mean_baseline_Grad_CAM_edited.nii.gz"
    )
    assert default_mask_path(info, "mask fused mean (baseline, Grad-CAM) edited") == expected
    # a run's short mask name still saves under its full name
    run = {**info, "map": "fused_mean", "run": "baseline, Grad-CAM"}
    assert default_mask_path(run, "mask fused·mean base GC edited") == expected
    assert default_mask_path(run, "corrected").name == "BraTS2021_00001_mask_corrected.nii.gz"
