"""A folder of cases through the case navigator, in a real viewer: keys, guard, resume."""

import time

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication, QMessageBox

from equicam.core.brats import load_case
from equicam.plugin.layers import GROUND_TRUTH
from equicam.plugin.sample_data import SAMPLE_CASE, chosen_mask_folder
from equicam.plugin.settings import load_settings
from equicam.plugin.widgets.cam_inspector import CHECKPOINT_FILE

pytestmark = pytest.mark.gui


def _open(make_napari_viewer, folder, checkpoint):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(folder), plugin="napari-equicam")
    inspector = viewer.window.dock_widgets["CAM inspector (napari-equicam)"]
    inspector.model.value = CHECKPOINT_FILE
    inspector.checkpoint.value = checkpoint
    inspector.device.value = "cpu"
    return viewer, inspector


def _key(viewer, key):
    QTest.keyClick(viewer.window._qt_viewer, key, Qt.KeyboardModifier.ShiftModifier)


def _answer(button):
    """Click ``button`` in the question that the next action opens."""

    def click():
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            box.button(button).click()
        else:
            QTimer.singleShot(20, click)

    QTimer.singleShot(20, click)


def _run_slice(inspector):
    """Click "Run current slice" and wait for its thread worker to finish."""
    inspector.run_slice.native.click()
    deadline = time.monotonic() + 120
    while inspector._worker is not None and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)


def _edit_mask(viewer, inspector):
    """Compute the slice under the cursor, then paint on its fused mask (unsaved edit)."""
    _run_slice(inspector)
    mask = viewer.layers["mask fused·w tiny"]
    z = int(viewer.dims.current_step[0])
    with mask.block_history():
        for y in range(50, 60):
            mask.paint((z, y, 60), 1)
    QApplication.processEvents()
    return mask


def test_a_folder_opens_at_its_first_case_with_a_list_and_moves_with_keys(
    make_napari_viewer, case_folder, tiny_checkpoint
):
    viewer, inspector = _open(make_napari_viewer, case_folder, tiny_checkpoint)
    cases = inspector.cases
    assert cases.table.value["data"] == [
        ["BraTS2021_00000", "—", "new"],
        ["BraTS2021_00001", "—", "new"],
        ["BraTS2021_00002", "—", "new"],
    ]
    truth = load_case(case_folder / "BraTS2021_00000").seg
    np.testing.assert_array_equal(viewer.layers[GROUND_TRUTH].data, truth)
    assert viewer.dims.axis_labels == ("axial slice", "P", "L")
    assert not cases.previous.enabled

    _key(viewer, Qt.Key.Key_N)
    assert "BraTS2021_00001" in cases.title.value
    assert viewer.layers["FLAIR"].metadata["equicam"]["case_id"] == "BraTS2021_00001"
    assert len(viewer.layers) == 5  # the first case's layers are gone
    _run_slice(inspector)
    assert cases.table.value["data"][1][2] == "maps computed"
    _key(viewer, Qt.Key.Key_B)
    assert "BraTS2021_00000" in cases.title.value
    assert [row[2] for row in cases.table.value["data"]] == ["new", "maps computed", "new"]


def test_switching_with_unsaved_edits_asks_cancel_stays_save_saves_and_the_mask_reopens(
    make_napari_viewer, case_folder, tiny_checkpoint
):
    viewer, inspector = _open(make_napari_viewer, case_folder, tiny_checkpoint)
    cases = inspector.cases
    mask = _edit_mask(viewer, inspector)
    edited = np.array(mask.data)
    assert cases.table.value["data"][0][2] == "edited"

    _answer(QMessageBox.StandardButton.Cancel)
    cases.next.native.click()
    assert "BraTS2021_00000" in cases.title.value and mask in viewer.layers

    _answer(QMessageBox.StandardButton.Save)
    _key(viewer, Qt.Key.Key_N)
    assert "BraTS2021_00001" in cases.title.value
    saved = case_folder / "BraTS2021_00000" / "BraTS2021_00000_mask_fused_weighted_tiny.nii.gz"
    assert saved.is_file()
    volume = float(np.count_nonzero(edited) * 8 / 1000)  # 2 mm voxels
    assert cases.table.value["data"][0][1:] == [f"{volume:.1f}", "saved"]

    cases.previous.native.click()  # no edits here: no question
    reopened = viewer.layers["mask fused weighted tiny"]
    np.testing.assert_array_equal(reopened.data, edited)
    assert reopened.metadata["equicam"]["saved"]


def test_discarding_edits_switches_and_the_folder_resumes_at_the_first_unfinished_case(
    make_napari_viewer, case_folder, tiny_checkpoint
):
    viewer, inspector = _open(make_napari_viewer, case_folder, tiny_checkpoint)
    _edit_mask(viewer, inspector)
    inspector.masks.save_selected()
    _key(viewer, Qt.Key.Key_N)  # case 1 saved: no question
    _edit_mask(viewer, inspector)
    _answer(QMessageBox.StandardButton.Discard)
    _key(viewer, Qt.Key.Key_N)
    assert "BraTS2021_00002" in inspector.cases.title.value
    assert not list((case_folder / "BraTS2021_00001").glob("*mask*"))
    viewer.close()

    viewer, inspector = _open(make_napari_viewer, case_folder, tiny_checkpoint)
    assert "BraTS2021_00001" in inspector.cases.title.value  # the first one not saved
    assert [row[2] for row in inspector.cases.table.value["data"]] == [
        "saved",
        "maps computed",
        "new",
    ]
    assert "mask fused weighted tiny" not in viewer.layers


def test_a_chosen_save_folder_is_remembered_and_its_masks_count_as_saved(
    make_napari_viewer, case_folder, tiny_checkpoint, tmp_path
):
    viewer, inspector = _open(make_napari_viewer, case_folder, tiny_checkpoint)
    folder = tmp_path / "corrections"  # not there yet: made by the first save
    inspector.masks.save_folder.value = folder
    mask = _edit_mask(viewer, inspector)
    edited = np.array(mask.data)
    viewer.layers.selection.active = mask
    saved = folder / "BraTS2021_00000_mask_fused_weighted_tiny.nii.gz"
    assert inspector.masks.save_path.value == saved
    inspector.masks.save.native.click()
    assert saved.is_file() and not list((case_folder / "BraTS2021_00000").glob("*mask*"))
    assert inspector.cases.table.value["data"][0][2] == "saved"
    viewer.close()

    viewer, inspector = _open(make_napari_viewer, case_folder, tiny_checkpoint)  # a new session
    assert inspector.masks.save_folder.value == folder
    assert "BraTS2021_00001" in inspector.cases.title.value  # case 0 counts as saved
    inspector.cases.previous.native.click()
    np.testing.assert_array_equal(viewer.layers["mask fused weighted tiny"].data, edited)

    inspector.masks.save_folder.value = SAMPLE_CASE.parent  # inside the package: refused
    assert inspector.masks.save_folder.value is None and chosen_mask_folder() is None
    assert load_settings()["masks"] == {"folder": None}  # beside each case again
