"""The CAM inspector, driven through its own controls in a real napari viewer."""

import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from napari.utils.notifications import notification_manager

from equicam.core.brats import load_case
from equicam.core.checkpoint import load_checkpoint, save_checkpoint
from equicam.core.model import ModelConfig, MultiModalCAM
from equicam.plugin.cam_layers import cam_layer_name, mask_layer_name
from equicam.plugin.sample_data import SAMPLE_CASE
from equicam.plugin.widgets.cam_inspector import CHECKPOINT_FILE, CamInspector
from equicam.plugin.widgets.compare import TITLE_FONT_SIZE


def _checkpoint(folder, name, **config):
    torch.manual_seed(0)
    model = MultiModalCAM(ModelConfig(**config))
    return save_checkpoint(folder / f"{name}.safetensors", model, {"threshold": 0.5})


@pytest.fixture(scope="module")
def slow_checkpoint(tmp_path_factory):
    """About a second per batch here: a cancel lands in the middle of a whole-volume run."""
    return _checkpoint(
        tmp_path_factory.mktemp("slow"), "slow", widths=(16, 32, 32, 32), input_size=160
    )


@pytest.fixture
def inspector(make_napari_viewer, tmp_path, tiny_checkpoint):
    case = shutil.copytree(SAMPLE_CASE, tmp_path / SAMPLE_CASE.name)
    viewer = make_napari_viewer(show=True)
    viewer.open(str(case), plugin="napari-equicam")
    _, widget = viewer.window.add_plugin_dock_widget("napari-equicam", "CAM inspector")
    assert isinstance(widget, CamInspector)
    widget.model.value = CHECKPOINT_FILE
    widget.checkpoint.value = tiny_checkpoint
    widget.device.value = "cpu"
    viewer.dims.current_step = (40, 0, 0)
    return viewer, widget, case


def _run_slice(qtbot, widget):
    """Click "Run current slice" and wait for its worker (the UI stays live meanwhile)."""
    widget.run_slice.native.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)


def _run_volume(qtbot, widget):
    widget.run_volume.native.click()
    qtbot.waitUntil(lambda: widget.run_volume.enabled, timeout=60_000)


def test_pickers_fill_from_the_open_scans_and_a_modality_may_be_left_empty(inspector, qtbot):
    viewer, widget, _ = inspector
    assert {m: p.value for m, p in widget.pickers.items()} == {
        "t1": "T1",
        "t1ce": "T1ce",
        "t2": "T2",
        "flair": "FLAIR",
    }
    assert widget.model.choices[0] == "equivariant"
    assert widget.device.choices == ("auto", "cpu")  # this machine has no CUDA device
    assert not widget.checkpoint.native.isHidden()

    widget.pickers["t1"].value = None
    widget.pickers["t2"].value = None
    widget.per_sequence.value = True
    _run_slice(qtbot, widget)
    assert "CAM FLAIR tiny" in viewer.layers and "CAM T1ce tiny" in viewer.layers
    assert "CAM T1 tiny" not in viewer.layers and "mask T2 tiny" not in viewer.layers
    assert "CAM FLAIR tiny" not in widget.pickers["flair"].choices  # outputs are no inputs


def test_current_slice_then_whole_volume_give_named_layers_in_the_scan_geometry(inspector, qtbot):
    viewer, widget, case = inspector
    _run_slice(qtbot, widget)
    cam = viewer.layers["CAM fused·w tiny"]
    scan = viewer.layers["FLAIR"]
    assert cam.data.shape == scan.data.shape
    np.testing.assert_allclose(cam.scale, scan.scale)
    np.testing.assert_allclose(cam.translate, scan.translate)  # both in scanner mm
    low, peak = cam.colormap.map(np.array([0.1, 0.9]))
    assert cam.blending == "translucent" and low[3] == 0 and peak[3] == 1  # low: see-through
    assert cam.metadata["equicam"]["geometry"] is scan.metadata["equicam"]["geometry"]
    computed = np.flatnonzero(cam.data.reshape(len(cam.data), -1).any(axis=1))
    assert computed.tolist() == [40]
    mask = viewer.layers["mask fused·w tiny"]
    np.testing.assert_array_equal(mask.data, cam.data >= 0.5)

    assert set(widget.plot.probabilities) == {"t1", "t1ce", "t2", "flair"}
    assert np.flatnonzero(widget.plot.computed).tolist() == [40]
    viewer.dims.current_step = (12, 0, 0)
    assert widget.plot.current == 12

    _run_volume(qtbot, widget)
    assert widget.plot.computed.sum() > 20
    computed = np.flatnonzero(cam.data.reshape(len(cam.data), -1).any(axis=1))
    assert len(computed) > 20
    widget.threshold.value = 0.3
    np.testing.assert_array_equal(viewer.layers["mask fused·w tiny"].data, cam.data >= 0.3)


def test_per_sequence_maps_are_added_on_request_and_removed_but_an_edited_mask(inspector, qtbot):
    viewer, widget, _ = inspector
    assert not widget.per_sequence.value  # by default: the fused map alone, a quick first click
    _run_slice(qtbot, widget)
    made = [layer.name for layer in viewer.layers if "run" in layer.metadata.get("equicam", {})]
    assert made == ["CAM fused·w tiny", "mask fused·w tiny"]

    widget.per_sequence.value = True  # from the run already made: the networks do not run
    assert widget._worker is None
    for m in ("T1", "T1ce", "T2", "FLAIR"):
        cam, mask = viewer.layers[f"CAM {m} tiny"], viewer.layers[f"mask {m} tiny"]
        assert not cam.visible and not mask.visible  # on request, but hidden: not crowded
        computed = np.flatnonzero(cam.data.reshape(len(cam.data), -1).any(axis=1))
        assert computed.tolist() == [40]
        np.testing.assert_array_equal(mask.data, cam.data >= 0.5)
    viewer.dims.current_step = (30, 0, 0)
    _run_slice(qtbot, widget)  # later runs update them too
    cam = viewer.layers["CAM T2 tiny"].data
    assert np.flatnonzero(cam.reshape(len(cam), -1).any(axis=1)).tolist() == [30, 40]

    edited = viewer.layers["mask FLAIR tiny"]
    edited.paint((40, 50, 50), 1)
    widget.per_sequence.value = False
    left = [layer.name for layer in viewer.layers if "run" in layer.metadata.get("equicam", {})]
    assert left == ["CAM fused·w tiny", "mask fused·w tiny", "mask FLAIR tiny"]
    assert edited.data[40, 50, 50] == 1


def test_bias_correction_follows_the_checkpoint_and_a_corrected_run_is_a_run_of_its_own(
    inspector, tiny_checkpoint, tmp_path, qtbot
):
    viewer, widget, _ = inspector
    assert widget.bias_correction.value is False  # the tiny checkpoint's data: not corrected
    model, meta = load_checkpoint(tiny_checkpoint)
    corrected = save_checkpoint(
        tmp_path / "tiny.safetensors", model, {**meta, "bias_correction": True}
    )
    widget.checkpoint.value = corrected
    assert widget.bias_correction.value is True
    _run_slice(qtbot, widget)
    on = viewer.layers["CAM fused·w tiny bc"]
    assert "CAM fused·w tiny" not in viewer.layers
    widget.bias_correction.value = False  # the user's choice: the same networks, uncorrected
    _run_slice(qtbot, widget)
    off = viewer.layers["CAM fused·w tiny"]
    assert on.data[40].any() and np.abs(on.data[40] - off.data[40]).max() > 1e-3
    assert "mask fused·w tiny bc" in viewer.layers and "mask fused·w tiny" in viewer.layers
    for bundled, corrects in (("equivariant", True), ("baseline", True), ("second-stage", False)):
        widget.model.value = bundled  # the CAM networks were calibrated on corrected patients
        assert widget.bias_correction.value is corrects


def test_masks_use_the_checkpoints_threshold_per_map_until_the_slider_moves(
    make_napari_viewer, tmp_path, qtbot
):
    torch.manual_seed(0)
    model = MultiModalCAM(ModelConfig(widths=(4, 8, 8, 8), input_size=32))
    with torch.no_grad():
        for net in model.nets.values():
            net.head.weight[1] += 0.3
    own = {"flair": 0.2, "fused_weighted": 0.6}
    checkpoint = save_checkpoint(
        tmp_path / "permap.safetensors", model, {"threshold": 0.5, "thresholds": own}
    )
    viewer = make_napari_viewer()
    viewer.open(str(SAMPLE_CASE), plugin="napari-equicam")
    widget = CamInspector(viewer)
    widget.model.value = CHECKPOINT_FILE
    widget.checkpoint.value = checkpoint
    widget.per_sequence.value = True
    viewer.dims.current_step = (40, 0, 0)
    _run_slice(qtbot, widget)

    def mask_of(name):
        return viewer.layers[mask_layer_name(name, "permap")].data

    def cam_of(name):
        return viewer.layers[cam_layer_name(name, "permap")].data

    assert widget.per_map.value and widget.threshold.value == 0.5
    for name, threshold in (("flair", 0.2), ("fused_weighted", 0.6), ("t1", 0.5)):
        np.testing.assert_array_equal(mask_of(name), cam_of(name) >= threshold)
    widget.threshold.value = 0.35
    assert not widget.per_map.value
    for name in ("flair", "fused_weighted", "t1"):
        np.testing.assert_array_equal(mask_of(name), cam_of(name) >= 0.35)
    widget.per_map.value = True
    np.testing.assert_array_equal(mask_of("flair"), cam_of("flair") >= 0.2)


def test_an_edited_mask_is_kept_and_brush_edits_undo(inspector, qtbot):
    viewer, widget, _ = inspector
    _run_slice(qtbot, widget)
    mask = viewer.layers["mask fused·w tiny"]
    viewer.layers.selection.active = mask
    assert "unsaved" not in widget.masks.status.value
    volume = np.count_nonzero(mask.data) * np.prod(mask.scale) / 1000
    assert f"{volume:.2f} cm³" in widget.masks.status.value
    before = mask.data.copy()
    mask.brush_size = 3
    mask.paint((40, 30, 30), 1)
    assert mask.data[40, 30, 30] == 1 and not np.array_equal(mask.data, before)
    mask.undo()
    np.testing.assert_array_equal(mask.data, before)
    mask.brush_size = 9
    mask.paint((40, 60, 60), 1)
    edited = mask.data.copy()
    volume = np.count_nonzero(edited) * np.prod(mask.scale) / 1000
    qtbot.waitUntil(lambda: f"{volume:.2f} cm³  (unsaved edits)" in widget.masks.status.value)

    widget.threshold.value = 0.7  # would rethreshold: the edited mask must survive
    assert mask.name == "mask fused·w tiny edited"
    np.testing.assert_array_equal(mask.data, edited)
    fresh = viewer.layers["mask fused·w tiny"]
    np.testing.assert_array_equal(fresh.data, viewer.layers["CAM fused·w tiny"].data >= 0.7)
    _run_slice(qtbot, widget)  # a re-run keeps it too
    np.testing.assert_array_equal(viewer.layers["mask fused·w tiny edited"].data, edited)


def test_save_writes_the_mask_in_the_scan_geometry_and_reloads_equal(inspector, tmp_path, qtbot):
    viewer, widget, case = inspector
    widget.per_sequence.value = True
    _run_slice(qtbot, widget)
    mask = viewer.layers["mask FLAIR tiny"]
    mask.paint((40, 50, 50), 1)
    viewer.layers.selection.active = mask
    saved = case / "BraTS2021_00000_mask_FLAIR_tiny.nii.gz"
    assert widget.masks.save_path.value == saved  # where it goes, shown before saving
    assert "mask FLAIR (tiny), paper protocol" in widget.masks.status.value  # its full name
    widget.masks.save.native.click()
    assert saved.is_file() and "unsaved" not in widget.masks.status.value
    image = nib.load(saved)
    scan = nib.load(case / "BraTS2021_00000_flair.nii.gz")
    np.testing.assert_array_equal(image.affine, scan.affine)
    geometry = load_case(case).geometry
    np.testing.assert_array_equal(geometry.to_display(np.asarray(image.dataobj)), mask.data)

    widget.masks.save_path.value = case / "BraTS2021_00000_t1.nii.gz"
    before = (case / "BraTS2021_00000_t1.nii.gz").read_bytes()
    widget.masks.save.native.click()
    assert (case / "BraTS2021_00000_t1.nii.gz").read_bytes() == before


def test_cancel_stops_a_whole_volume_run_midway(inspector, qtbot, slow_checkpoint):
    viewer, widget, _ = inspector
    widget.checkpoint.value = slow_checkpoint
    steps = []
    widget.run_volume.native.click()
    assert (
        widget.cancel.enabled
        and not widget.run_volume.enabled
        and widget.run_slice.enabled is False
    )
    widget._worker.yielded.connect(steps.append)
    qtbot.waitUntil(lambda: any(step.done >= 1 for step in steps), timeout=30_000)
    widget.cancel.native.click()
    qtbot.waitUntil(lambda: widget.run_volume.enabled, timeout=30_000)
    assert steps[-1].done < steps[-1].total  # stopped midway
    assert not [layer.name for layer in viewer.layers if "slow" in layer.name]
    assert not widget.cancel.enabled and widget.run_slice.enabled


def test_an_error_in_the_worker_is_shown_and_the_widget_leaves_its_busy_state(
    inspector, qtbot, tmp_path
):
    viewer, widget, _ = inspector
    widget.checkpoint.value = _checkpoint(
        tmp_path, "t1only", modalities=("t1",), widths=(4, 8, 8, 8), input_size=32
    )
    widget.pickers["t1"].value = None  # the model has no network for what is picked
    notification_manager.records.clear()
    widget.run_volume.native.click()
    qtbot.waitUntil(lambda: widget.run_volume.enabled, timeout=30_000)
    messages = [str(n.message) for n in notification_manager.records]
    assert any("networks for t1" in m for m in messages), messages
    assert not widget.cancel.enabled and widget.run_slice.enabled
    assert not [layer.name for layer in viewer.layers if "t1only" in layer.name]


def test_a_bad_checkpoint_is_reported_and_the_widget_stays_usable(inspector, tmp_path, qtbot):
    viewer, widget, _ = inspector
    bad = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, bad)
    widget.checkpoint.value = bad
    notification_manager.records.clear()
    _run_slice(qtbot, widget)
    messages = [str(n.message) for n in notification_manager.records]
    assert any("never unpickled" in m and "model.safetensors" in m for m in messages)
    assert widget.run_slice.enabled and "CAM fused·w bad" not in viewer.layers


def test_compare_table_and_side_by_side_grid(inspector, tmp_path, qtbot):
    viewer, widget, _ = inspector
    _run_slice(qtbot, widget)
    widget.checkpoint.value = _checkpoint(tmp_path, "other", widths=(4, 8, 8, 8), input_size=32)
    widget.method.value = "gradcampp"
    _run_slice(qtbot, widget)
    widget.comparison.compare.native.click()
    rows = widget.comparison.table.value["data"]
    assert len(rows) == 2 and all(0 <= float(row[1]) <= 1 and float(row[2]) >= 0 for row in rows)
    assert "mask fused·w other GC++" in [row[0] for row in rows]
    table = widget.comparison.table.native
    shown = table.itemDelegate().displayText(rows[0][1], table.locale())
    assert shown == rows[0][1] and len(shown.split(".")[1]) == 3  # as written, not 4 decimals

    before = [(layer.name, layer.visible) for layer in viewer.layers]
    grid = viewer.canvas.grid

    def cells():
        return [
            [viewer.layers[i].name for i in indices]
            for _, indices in grid.iter_viewboxes(viewer.layers)
            if indices
        ]

    widget.comparison.side_by_side.value = "runs of one map"
    assert grid.enabled and grid.stride == 3
    assert cells() == [
        [
            "FLAIR (CAM fused·w tiny)",
            "CAM fused·w tiny",
            "mask fused·w tiny",
        ],
        [
            "FLAIR (CAM fused·w other GC++)",
            "CAM fused·w other GC++",
            "mask fused·w other GC++",
        ],
    ]
    title = viewer.layers["CAM fused·w tiny"].name_overlay
    assert title.visible and title.font_size == TITLE_FONT_SIZE < 10  # napari's 10 is cut
    for name in cells()[0]:  # one place in scanner mm: the scan under its CAM and mask
        np.testing.assert_allclose(viewer.layers[name].translate, viewer.layers["FLAIR"].translate)
    assert viewer.layers["mask fused·w tiny"].contour == 1  # outlined in the grid
    assert widget.pickers["flair"].value == "FLAIR"
    assert "FLAIR (CAM fused·w tiny)" not in widget.pickers["flair"].choices

    widget.comparison.side_by_side.value = "off"
    assert [(layer.name, layer.visible) for layer in viewer.layers] == before
    viewer.layers.selection.active = viewer.layers["CAM fused·w tiny"]
    widget.comparison.side_by_side.value = "sequences of one run"  # makes the sequences' maps
    assert widget.per_sequence.value
    assert [cell[:2] for cell in cells()] == [
        [f"{scan} (CAM {name} tiny)", f"CAM {name} tiny"]
        for scan, name in [
            ("T1", "T1"),
            ("T1ce", "T1ce"),
            ("T2", "T2"),
            ("FLAIR", "FLAIR"),
            ("FLAIR", "fused·w"),
        ]
    ]
    widget.comparison.side_by_side.value = "off"
    assert not grid.enabled
    now = [(layer.name, layer.visible) for layer in viewer.layers]
    assert [item for item in now if item in before] == before
    added = [name for name, visible in now if (name, visible) not in before]
    assert len(added) == 16 and not any(dict(now)[name] for name in added)  # 2 runs x 4 x 2


def test_closing_with_unsaved_edits_asks_first(inspector, monkeypatch, qtbot):
    from qtpy.QtGui import QCloseEvent
    from qtpy.QtWidgets import QApplication, QMessageBox

    viewer, widget, _ = inspector
    _run_slice(qtbot, widget)
    mask = viewer.layers["mask fused·w tiny"]
    mask.paint((40, 60, 60), 1)
    assert widget.masks.unsaved_masks() == ["mask fused·w tiny"]
    asked = []

    def answer_no(*args):
        asked.append(args[2])
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "question", answer_no)
    event = QCloseEvent()
    QApplication.sendEvent(widget.native.window(), event)
    assert asked and "mask fused·w tiny" in asked[0]
    assert not event.isAccepted()
    viewer.layers.selection.active = mask
    widget.masks.save_path.value = widget.masks.save_path.value  # default path next to the case
    widget.masks.save.native.click()
    assert widget.masks.unsaved_masks() == []


def test_model_and_scans_are_made_ready_in_the_background_once_and_reused(inspector, qtbot):
    from equicam.core.inference import inference_copy

    viewer, widget, _ = inspector
    key = (str(widget.checkpoint.value), "cpu")

    def ready():
        loaded, normalised = widget._models.get(key), widget._normalised
        return loaded is not None and loaded.done() and normalised and normalised[1].done()

    qtbot.waitUntil(ready, timeout=60_000)  # before any click
    loading, normalised = widget._models[key], widget._normalised[1]
    model, _ = loading.result()
    copies = {m: inference_copy(net, "cpu") for m, net in model.nets.items()}
    widget.run_slice.native.click()
    assert widget._worker is not None and not widget.run_slice.enabled  # runs off the UI thread
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert "CAM fused·w tiny" in viewer.layers
    viewer.dims.current_step = (30, 0, 0)
    _run_slice(qtbot, widget)
    assert widget._models[key] is loading and widget._normalised[1] is normalised
    assert all(inference_copy(net, "cpu") is copies[m] for m, net in model.nets.items())
    cam = viewer.layers["CAM fused·w tiny"].data
    assert np.flatnonzero(cam.reshape(len(cam), -1).any(axis=1)).tolist() == [30, 40]
    flair = viewer.layers["FLAIR"]
    flair.data = flair.data * 2.0  # a layer's data replaced: its scans are normalised again
    _run_slice(qtbot, widget)
    assert widget._normalised[1] is not normalised


def test_closing_the_inspector_ends_its_background_threads(make_napari_viewer, qtbot):
    import threading
    import time

    from qtpy.QtCore import QCoreApplication, QEvent

    viewer = make_napari_viewer()
    before = set(threading.enumerate())
    widget = CamInspector(viewer)
    pool = widget._background
    for future in [pool.submit(time.sleep, 0.2) for _ in range(2)]:  # both threads start
        future.result()
    mine = {t for t in set(threading.enumerate()) - before if t.name.startswith("equicam")}
    assert len(mine) == 2
    widget.native.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    qtbot.waitUntil(lambda: not any(t.is_alive() for t in mine), timeout=10_000)
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(print)
