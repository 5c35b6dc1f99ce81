"""Each correction tool through its button on a real viewer, and napari's undo of each."""

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

from equicam.core import mask_edit
from equicam.plugin import shortcuts

pytestmark = pytest.mark.gui
SPACING = (3.0, 1.0, 1.0)  # thick slices: millimetres must follow the spacing


def _docked_tools(viewer):
    """The correction tools of the CAM inspector, docked as napari does (keys included)."""
    _, inspector = viewer.window.add_plugin_dock_widget("napari-equicam", "CAM inspector")
    return inspector.tools


@pytest.fixture
def tools(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    mask = np.zeros((12, 40, 40), np.uint8)
    mask[4:8, 10:25, 10:25] = 1  # a block with a one-voxel cavity in its middle
    mask[6, 17, 17] = 0
    mask[5, 32:34, 32:34] = 1  # a 4-voxel island: 12 mm3
    layer = viewer.add_labels(mask, name="mask", scale=SPACING)
    return viewer, _docked_tools(viewer), layer


@pytest.mark.parametrize(
    ("button", "expected"),
    [
        ("remove_islands", lambda m: mask_edit.remove_small_components(m, SPACING, 20.0)),
        ("fill_holes", lambda m: mask_edit.fill_holes(m, 0)),
        ("grow", lambda m: mask_edit.grow(m, SPACING, 3.0)),
        ("shrink", lambda m: mask_edit.shrink(m, SPACING, 3.0)),
    ],
)
def test_each_tool_changes_the_mask_as_the_core_does_and_undo_restores_it(tools, button, expected):
    viewer, widget, layer = tools
    widget.min_island.value, widget.margin.value = 20.0, 3.0
    before = np.array(layer.data)
    viewer.layers.selection.active = layer
    getattr(widget, button).native.click()
    np.testing.assert_array_equal(layer.data != 0, expected(before != 0))
    assert not np.array_equal(layer.data, before)
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)
    layer.redo()
    np.testing.assert_array_equal(layer.data != 0, expected(before != 0))


def test_keep_component_under_the_cursor_key_then_undo(tools):
    viewer, widget, layer = tools
    before = np.array(layer.data)
    viewer.layers.selection.active = layer
    viewer.cursor.position = (5 * 3.0, 32.0, 33.0)  # world mm: on the island
    QTest.keyClick(viewer.window._qt_viewer, Qt.Key.Key_K, Qt.KeyboardModifier.ShiftModifier)
    assert np.count_nonzero(layer.data) == 4 and layer.data[5, 32, 32] == 1
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_fill_between_slices_drawn_with_the_brush_then_undo(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_labels(np.zeros((9, 30, 30), np.uint8), name="drawn", scale=SPACING)
    widget = _docked_tools(viewer)
    viewer.layers.selection.active = layer
    widget.fill_between.native.click()  # nothing drawn yet: an error, no change
    assert not layer.data.any()
    for z in (1, 7):  # a square drawn on two slices, one brush stroke each
        with layer.block_history():
            for y in range(10, 20):
                for x in range(10, 20):
                    layer.paint((z, y, x), 1)
    drawn = np.array(layer.data)
    assert shortcuts.keys("interpolate")  # bound, and named in the button's tooltip
    assert widget.fill_between.tooltip.endswith(f"({shortcuts.keys('interpolate')})")
    QTest.keyClick(viewer.window._qt_viewer, Qt.Key.Key_I, Qt.KeyboardModifier.ShiftModifier)
    expected = mask_edit.interpolate_slices(drawn, 0, [1, 7], SPACING)
    np.testing.assert_array_equal(layer.data != 0, expected)
    assert layer.data[2:7].any(axis=(1, 2)).all() and not layer.data[0].any()
    layer.undo()
    np.testing.assert_array_equal(layer.data, drawn)
