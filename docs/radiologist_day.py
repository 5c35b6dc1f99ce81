"""A radiologist's day, scripted: a folder of cases corrected, saved, closed and resumed.

Writes 5 small synthetic cases (as ``equicam synth DIR --cases 5 --seed 3 --size small``),
opens the folder as ``equicam view DIR`` does (1366 x 768 window), and for each case of the
first session: runs the bundled equivariant model on the whole volume, draws the tumour on two
slices of the fused mask with the brush, fills the slices between them (Shift-I), saves
(Shift-S) and goes to the next case (Shift-N), keys sent to the canvas as a user types them.
After two cases napari is closed; reopening the folder must resume at case 3, which is then
done the same way. Prints the time per case and writes a screenshot at each step into
``--out``; ``--readme`` also writes the first case's filled mask as ``docs/screenshot_day.png``.
Run from the repository root::

    xvfb-run -a .venv/bin/python docs/radiologist_day.py --out /tmp/day [--readme]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

sys.path.insert(0, str(Path(__file__).parent))
from screenshots import settle  # noqa: E402

from equicam.core.synth import write_cases  # noqa: E402
from equicam.plugin.cam_layers import mask_layer_name, run_label  # noqa: E402
from equicam.plugin.layers import GROUND_TRUTH  # noqa: E402
from equicam.plugin.viewer import open_viewer  # noqa: E402

SIZE = (1366, 768)


def key(viewer, letter: str, modifiers=Qt.KeyboardModifier.ShiftModifier) -> None:
    """Press a key on the canvas, as the user does."""
    QTest.keyClick(viewer.window._qt_viewer, getattr(Qt.Key, f"Key_{letter}"), modifiers)
    settle()


def open_day(data: Path):
    viewer = open_viewer(data, run=False)
    viewer.window.show()
    viewer.window._qt_window.resize(*SIZE)
    inspector = viewer.window.dock_widgets["CAM inspector (napari-equicam)"]
    settle()
    return viewer, inspector


def correct_case(viewer, inspector, shot) -> float:
    """Run, correct by drawing two slices and filling between, save; seconds taken."""
    start = time.monotonic()
    case = inspector.cases.folder.ids[inspector.cases.folder.current]
    truth = np.asarray(viewer.layers[GROUND_TRUTH].data) > 0
    area = truth.sum(axis=(1, 2))
    z = int(np.argmax(area))
    viewer.dims.set_current_step(0, z)
    key(viewer, "R", Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    settle(lambda: not inspector.cancel.enabled)
    shot(f"{case}_1_maps")
    run = run_label("equivariant", "cam", inspector.bias_correction.value)
    mask = viewer.layers[mask_layer_name("fused_weighted", run)]
    viewer.layers.selection.active = mask
    mask.mode, mask.brush_size = "paint", 3
    # The radiologist redraws the tumour on two slices 6 apart (brush and eraser strokes,
    # one undo step per slice), then fills the slices between them.
    tumour = np.flatnonzero(area)
    low, high = max(z - 3, tumour[0]), min(z + 3, tumour[-1])
    for s in (low, high):
        with mask.block_history():
            drawn = mask.data[s] > 0
            for label, wrong in ((1, truth[s] & ~drawn), (0, ~truth[s] & drawn)):
                for y, x in zip(*np.nonzero(wrong), strict=True):
                    mask.paint((s, y, x), label)
    viewer.dims.set_current_step(0, (low + high) // 2)
    shot(f"{case}_2_drawn")
    key(viewer, "I")
    shot(f"{case}_3_filled")
    key(viewer, "S")
    shot(f"{case}_4_saved")
    return time.monotonic() - start


def main(out: Path, readme: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    write_cases(data, 5, seed=3, size="small")
    os.environ["EQUICAM_CONFIG"] = str(out / "settings.json")
    times = {}

    viewer, inspector = open_day(data)

    def shot(name: str) -> None:
        settle()
        viewer.screenshot(str(out / f"{name}.png"), canvas_only=False)

    shot("0_folder_opened")
    for _ in range(2):
        case = inspector.cases.folder.ids[inspector.cases.folder.current]
        times[case] = correct_case(viewer, inspector, shot)
        key(viewer, "N")
    if readme:
        shutil.copy(
            out / "BraTS2021_00000_3_filled.png", Path(__file__).parent / "screenshot_day.png"
        )
    shot("5_before_close")
    viewer.close()

    viewer, inspector = open_day(data)
    shot("6_reopened")
    case = inspector.cases.folder.ids[inspector.cases.folder.current]
    assert case == "BraTS2021_00002", f"resumed at {case}, not at case 3"
    times[case] = correct_case(viewer, inspector, shot)
    shot("7_case3_done")
    viewer.close()
    for case, seconds in times.items():
        print(f"{case}: {seconds:.1f} s (run whole volume, draw 2 slices, fill between, save)")
    print(f"screenshots in {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for data and screenshots")
    parser.add_argument("--readme", action="store_true", help="also write the README's screenshot")
    args = parser.parse_args()
    main(args.out, args.readme)
