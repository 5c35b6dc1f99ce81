"""Regenerate the six README screenshots from the real app, driven through its widgets.

Opens the sample case as ``equicam view`` does (CAM inspector docked), runs the bundled models
with the inspector's own controls and writes, into ``docs/`` (or ``--out``):

- ``screenshot_sample.png``: the sample case as opened;
- ``screenshot_cams.png``: the equivariant run, each sequence's CAM over its own scan and the
  fused CAM over FLAIR (grid ``sequences of one run``);
- ``screenshot_compare.png``: equivariant CAM, baseline CAM and baseline Grad-CAM++ side by side
  (grid ``runs of one map``) with the Dice/ASSD table filled;
- ``screenshot_second_stage.png``: the bundled second stage's mask over FLAIR with the ground
  truth's outline (its row is at the end of the Dice/ASSD table);
- ``screenshot_corrected.png``: a pseudo-mask corrected with a few brush strokes, its volume and
  "unsaved edits" on the status line;
- ``screenshot_refined.png``: the equivariant mask under the ``refined`` protocol over FLAIR with
  the ground truth's outline.

Every screenshot shows the slice with the largest tumour area. Run from the repository root::

    xvfb-run -a .venv/bin/python docs/screenshots.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import QApplication, QScrollArea

from equicam.plugin.cam_layers import cam_layer_name, mask_layer_name, run_label
from equicam.plugin.layers import GROUND_TRUTH
from equicam.plugin.viewer import open_viewer

if TYPE_CHECKING:
    from equicam.plugin.widgets.cam_inspector import CamInspector

SIZE = (1700, 1000)  # window size in pixels


def settle(until: Callable[[], bool] = lambda: True, timeout: float = 1800.0) -> None:
    """Process Qt events until ``until()`` holds, then a little longer so the canvas draws.

    Parameters
    ----------
    until
        Condition to wait for (e.g. a thread worker has finished).
    timeout
        Seconds to wait before giving up.

    Raises
    ------
    TimeoutError
        If ``until()`` is still false after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not reach the expected state")
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)


def run_volume(
    inspector: CamInspector, model: str, method: str, shown: str = "fused_weighted"
) -> str:
    """Run the whole volume with ``model`` and ``method`` (bias-field correction as the
    checkpoint says) and wait for its layers; return the run's label.

    Parameters
    ----------
    inspector
        The docked CAM inspector.
    model
        ``equivariant``, ``baseline`` or ``second-stage``.
    method
        ``cam``, ``gradcam`` or ``gradcampp``.
    shown
        The map whose layer the run must make (``second_stage`` for a second stage).

    Returns
    -------
    str
        The label in the run's layer names (:func:`~equicam.plugin.cam_layers.run_label`).
    """
    inspector.model.value, inspector.method.value = model, method
    inspector.run_volume.clicked()
    settle(lambda: not inspector.cancel.enabled)  # Cancel is enabled while the worker runs
    label = run_label(model, method, inspector.bias_correction.value)
    name = cam_layer_name(shown, label)
    if name not in inspector.viewer.layers:
        raise RuntimeError(f"the run made no layer '{name}'")
    return label


def show_in_dock(inspector: CamInspector, widget) -> None:
    """Scroll the inspector's dock so that ``widget`` is in view."""
    settle()
    scroll = inspector.native.findChild(QScrollArea)
    scroll.ensureWidgetVisible(widget)
    scroll.horizontalScrollBar().setValue(0)  # the dock's left edge, as a user sees it


def main(out: Path) -> None:
    """Open the sample case, drive the CAM inspector and save the six screenshots.

    Parameters
    ----------
    out
        Folder the PNG files are written to.
    """
    out.mkdir(parents=True, exist_ok=True)
    # the app's defaults, not this user's remembered choices
    os.environ["EQUICAM_CONFIG"] = str(Path(tempfile.mkdtemp()) / "settings.json")
    viewer = open_viewer(run=False)
    _, inspector = viewer.window.add_plugin_dock_widget("napari-equicam", "CAM inspector")
    viewer.window.show()
    viewer.window._qt_window.resize(*SIZE)  # after show(), which restores napari's saved size
    truth = np.asarray(viewer.layers[GROUND_TRUTH].data)
    z = int(np.argmax((truth > 0).sum(axis=(1, 2))))  # slice with the largest tumour area
    viewer.dims.set_current_step(0, z)

    def shot(name: str) -> None:
        settle()
        viewer.screenshot(str(out / f"screenshot_{name}.png"), canvas_only=False)

    shot("sample")

    equivariant = run_volume(inspector, "equivariant", "cam")
    inspector.comparison.side_by_side.value = "sequences of one run"
    shot("cams")
    inspector.comparison.side_by_side.value = "off"

    run_volume(inspector, "baseline", "cam")
    run_volume(inspector, "baseline", "gradcampp")
    viewer.layers.selection.active = viewer.layers["FLAIR"]  # compare the default (fused) map
    inspector.comparison.side_by_side.value = "runs of one map"
    inspector.comparison.compare.clicked()
    show_in_dock(inspector, inspector.comparison.table.native)
    shot("compare")
    inspector.comparison.side_by_side.value = "off"

    second_stage = run_volume(inspector, "second-stage", "cam", "second_stage")
    second = viewer.layers[mask_layer_name("second_stage", second_stage)]
    for layer in viewer.layers:
        layer.visible = layer in (viewer.layers["FLAIR"], viewer.layers[GROUND_TRUTH], second)
    viewer.layers.selection.active = second
    inspector.comparison.compare.clicked()  # the second stage's row joins the table
    show_in_dock(inspector, inspector.comparison.table.native)
    shot("second_stage")

    mask = viewer.layers[mask_layer_name("fused_weighted", equivariant)]
    for layer in viewer.layers:
        layer.visible = layer in (viewer.layers["FLAIR"], mask)
    viewer.layers.selection.active = mask
    mask.mode, mask.brush_size = "paint", 4
    # Brush and eraser strokes along three rows through the tumour, one undo step each (as a
    # drag paints): fill in tumour the mask missed, erase the mask outside the tumour.
    rows = np.nonzero((truth[z] > 0).any(axis=1))[0]
    for y in rows[[len(rows) // 4, len(rows) // 2, 3 * len(rows) // 4]]:
        inside, masked = truth[z, y] > 0, mask.data[z, y] > 0
        for label, wrong in ((1, inside & ~masked), (0, masked & ~inside)):
            with mask.block_history():
                for x in np.flatnonzero(wrong):
                    mask.paint((z, y, x), label)
    show_in_dock(inspector, inspector.masks.native)
    shot("corrected")

    # The refined protocol's mask; the corrected one above is kept beside it as "... edited".
    inspector.protocol.value = "refined"
    refined = viewer.layers[
        mask_layer_name("fused_weighted", run_volume(inspector, "equivariant", "cam"))
    ]
    for layer in viewer.layers:
        layer.visible = layer in (viewer.layers["FLAIR"], viewer.layers[GROUND_TRUTH], refined)
    viewer.layers.selection.active = refined
    show_in_dock(inspector, inspector.protocol.native)
    shot("refined")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="default: docs")
    main(parser.parse_args().out)
