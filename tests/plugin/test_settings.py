"""Remembered settings, layers placed in scanner mm, folders of cases told from one case."""

import json

import nibabel as nib
import numpy as np
import pytest

from equicam.core.brats import load_case
from equicam.plugin.layers import display_translate
from equicam.plugin.settings import load_settings, update_settings
from equicam.plugin.widgets.cam_inspector import CamInspector
from tests.conftest import BRATS_LPS, write_case


def test_settings_file_merges_sections_and_a_broken_file_means_defaults(own_settings_file):
    assert load_settings() == {}
    update_settings("inspector", {"map": "gradcam"})
    update_settings("inspector", {"fusion": "max"})
    update_settings("folders", {"/data": {"current": "A"}})
    assert load_settings() == {
        "inspector": {"map": "gradcam", "fusion": "max"},
        "folders": {"/data": {"current": "A"}},
    }
    own_settings_file.write_text("{ not json")
    assert load_settings() == {}


@pytest.mark.gui
def test_choices_survive_a_new_inspector(make_napari_viewer, qtbot, own_settings_file):
    viewer = make_napari_viewer(show=True)
    _, first = viewer.window.add_plugin_dock_widget("napari-equicam", "CAM inspector")
    first.method.value = "gradcampp"
    first.fusion.value = "max"
    first.device.value = "cpu"
    first.threshold.value = 0.35  # unticks the checkpoint's per-map thresholds
    first.display.mask_style.value = "outline"
    assert json.loads(own_settings_file.read_text())["inspector"]["map"] == "gradcampp"

    second = CamInspector(viewer)  # as in a new napari session
    qtbot.addWidget(second.native)
    assert second.method.value == "gradcampp" and second.fusion.value == "max"
    assert second.device.value == "cpu" and second.threshold.value == pytest.approx(0.35)
    assert not second.per_map.value and second.display.mask_style.value == "outline"


@pytest.mark.parametrize("affine", [BRATS_LPS, np.diag([2.0, 3.0, 1.5, 1.0])])
def test_each_voxel_lands_on_its_scanner_position(tmp_path, affine):
    """World (napari) = scanner RAS mm as (z, -y, -x), with a positive scale."""
    affine = affine.copy()
    affine[:3, 3] += (10.0, -20.0, 5.0)
    case = load_case(write_case(tmp_path / "case", shape=(12, 10, 8), affine=affine))
    translate = np.array(display_translate(case.geometry))
    scale = np.array(case.spacing)
    file_index = np.array([3, 7, 5])
    # where that file voxel lies in display order: mark it and find it again
    marker = np.zeros(case.geometry.file_shape, np.uint8)
    marker[tuple(file_index)] = 1
    display_index = np.argwhere(case.geometry.to_display(marker))[0]
    x, y, z = nib.affines.apply_affine(affine, file_index)
    np.testing.assert_allclose(translate + scale * display_index, (z, -y, -x))


def test_a_folder_of_cases_is_told_from_one_case_and_from_other_folders(tmp_path):
    from equicam.plugin.cases import holds_cases

    one = write_case(tmp_path / "data" / "Case_001", case_id="Case_001")
    assert not holds_cases(one) and not holds_cases(tmp_path / "missing")
    assert holds_cases(tmp_path / "data")  # one case in a sub-folder is a folder of cases
    write_case(tmp_path / "data" / "Case_002", case_id="Case_002")
    assert holds_cases(tmp_path / "data")
    (tmp_path / "empty").mkdir()
    assert not holds_cases(tmp_path / "empty")
