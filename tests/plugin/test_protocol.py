"""The CAM inspector's protocol: offered per checkpoint, applied, recorded and remembered."""

import shutil

import nibabel as nib
import numpy as np
import pytest

from equicam.core.checkpoint import load_checkpoint, save_checkpoint
from equicam.plugin.sample_data import SAMPLE_CASE
from equicam.plugin.widgets.cam_inspector import CHECKPOINT_FILE, CamInspector

MAPS = ("t1", "t1ce", "t2", "flair", "fused_weighted")


@pytest.fixture(scope="module")
def refined_checkpoint(tmp_path_factory, tiny_checkpoint):
    """The tiny model with refined settings (largest component, grown by 4 mm) as its choice."""
    model, _ = load_checkpoint(tiny_checkpoint)
    settings = {"threshold": 0.3, "largest_only": True, "min_component_mm3": 0.0, "grow_mm": 4.0}
    refined = {"z_sigma_mm": 2.0, "gate": 0.5, "maps": dict.fromkeys(MAPS, settings)}
    meta = {"threshold": 0.5, "refined": refined, "protocol": "refined"}
    return save_checkpoint(tmp_path_factory.mktemp("refined") / "tiny.safetensors", model, meta)


def _inspector(viewer, checkpoint):
    widget = CamInspector(viewer)
    widget.model.value = CHECKPOINT_FILE
    widget.checkpoint.value = checkpoint
    widget.device.value = "cpu"
    return widget


def _run_volume(qtbot, widget):
    widget.run_volume.native.click()
    qtbot.waitUntil(lambda: widget.run_volume.enabled, timeout=120_000)


def _refined_item_enabled(widget) -> bool:
    box = widget.protocol.native
    return box.model().item(box.findText("refined")).isEnabled()


@pytest.mark.gui
def test_switching_the_protocol_changes_masks_and_is_recorded_and_remembered(
    make_napari_viewer, qtbot, tmp_path, refined_checkpoint, tiny_checkpoint
):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(SAMPLE_CASE), plugin="napari-equicam")
    widget = _inspector(viewer, refined_checkpoint)
    qtbot.addWidget(widget.native)
    assert widget.protocol.value == "checkpoint" and _refined_item_enabled(widget)
    viewer.dims.current_step = (40, 0, 0)
    widget.run_slice.native.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    # one slice cannot be refined (gate smoothed along z, whole-volume normalisation): said
    assert "protocol paper (refined needs the whole volume" in widget.in_use.value
    _run_volume(qtbot, widget)
    mask = viewer.layers["mask fused·w tiny"]
    cam = viewer.layers["CAM fused·w tiny"]
    assert mask.metadata["equicam"]["protocol"] == "refined"
    assert widget.in_use.value.startswith("protocol refined; ")
    refined = mask.data.copy()
    labels = np.unique(refined)
    assert labels.tolist() == [0, 1]
    # the refined steps: one component grown inside the brain, more than the threshold alone
    assert np.count_nonzero(refined) > np.count_nonzero(cam.data >= 0.5)

    widget.protocol.value = "paper"  # the same run, shown again: no new network pass
    assert mask.metadata["equicam"]["protocol"] == "paper"
    assert cam.metadata["equicam"]["protocol"] == "paper"
    assert not np.array_equal(mask.data, refined)
    np.testing.assert_array_equal(mask.data, cam.data >= 0.5)  # paper: the threshold alone

    widget.protocol.value = "refined"
    np.testing.assert_array_equal(mask.data, refined)
    viewer.layers.selection.active = mask
    saved = tmp_path / "refined_mask.nii.gz"
    widget.masks.save_path.value = saved
    widget.masks.save.native.click()
    descrip = nib.load(saved).header["descrip"].item().decode()
    assert descrip == "equicam protocol=refined map=fused_weighted run=tiny"
    reopened = viewer.open(str(saved), plugin="napari-equicam")[0]
    assert reopened.metadata["equicam"]["protocol"] == "refined"

    second = _inspector(viewer, tiny_checkpoint)  # as in a new session: remembered
    qtbot.addWidget(second.native)
    assert second.protocol.value == "refined"
    assert not _refined_item_enabled(second)  # this checkpoint was never calibrated for it
    assert "no refined or guided calibration" in second.protocol.tooltip


@pytest.mark.gui
def test_a_second_stage_checkpoint_shows_its_probability_and_mask(
    make_napari_viewer, qtbot, tiny_segnet, tiny_checkpoint
):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(SAMPLE_CASE), plugin="napari-equicam")
    widget = _inspector(viewer, tiny_segnet)
    qtbot.addWidget(widget.native)
    widget.method.value = "gradcam"  # a CAM choice: a second stage has none
    assert not widget.method.enabled and not widget.protocol.enabled
    viewer.dims.current_step = (40, 0, 0)
    widget.run_slice.native.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    cam = viewer.layers["CAM second stage seg"]
    mask = viewer.layers["mask second stage seg"]
    assert cam.visible and cam.data.shape == viewer.layers["FLAIR"].data.shape
    assert np.flatnonzero(cam.data.reshape(len(cam.data), -1).any(axis=1)).tolist() == [40]
    np.testing.assert_array_equal(mask.data, cam.data >= 0.5)
    assert mask.metadata["equicam"]["protocol"] == "threshold"
    assert widget.in_use.value.startswith("protocol threshold")
    assert not [layer.name for layer in viewer.layers if "Grad-CAM" in layer.name]

    widget.checkpoint.value = tiny_checkpoint  # back to CAM networks: their choices return
    assert widget.method.enabled and widget.protocol.enabled


@pytest.mark.gui
def test_learn_from_corrections_runs_in_a_worker_and_can_be_cancelled(
    make_napari_viewer, qtbot, tiny_segnet, synthetic_cases, tmp_path
):
    from equicam.core.brats import load_case, save_volume
    from equicam.core.segnet import load_segnet

    folder = tmp_path / "corrected"
    shutil.copytree(synthetic_cases / "BraTS2021_00000", folder / "BraTS2021_00000")
    case = load_case(folder / "BraTS2021_00000")
    saved = folder / "BraTS2021_00000" / "BraTS2021_00000_mask_fused_weighted.nii.gz"
    save_volume(case.whole_tumour.astype("uint8"), case.geometry, saved)
    viewer = make_napari_viewer(show=True)
    widget = _inspector(viewer, tiny_segnet)
    qtbot.addWidget(widget.native)
    learn = widget.learn
    learn.cases.value = folder
    learn.out.value = tmp_path / "long.safetensors"
    learn.steps.value = 100_000
    learn.run.native.click()
    assert not learn.run.enabled and learn.cancel.enabled  # runs off the UI thread
    qtbot.waitUntil(lambda: learn.progress.value >= 1, timeout=120_000)
    learn.cancel.native.click()
    qtbot.waitUntil(lambda: learn._worker is None, timeout=60_000)
    assert learn.run.enabled and not (tmp_path / "long.safetensors").exists()

    learn.out.value = tmp_path / "short.safetensors"
    learn.steps.value = 3
    learn.run.native.click()
    qtbot.waitUntil(lambda: learn._worker is None, timeout=120_000)
    assert load_segnet(tmp_path / "short.safetensors")[1]["fine_tuned"]["steps"] == 3
