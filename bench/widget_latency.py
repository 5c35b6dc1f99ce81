"""How long does a click on "Run current slice" take in the real CAM inspector?

    PYTHONPATH=src xvfb-run -a .venv/bin/python bench/widget_latency.py [--clicks 20] \\
        [--checkpoint equivariant] [--device cpu] [--per-sequence] [--no-bias-correction]

A full-size synthetic case (240 x 240 x 155, ``equicam synth --seed 5``) is opened in a shown
napari viewer, the CAM inspector is docked with the given bundled model, and its button is
clicked with the cursor on slices with brain drawn at random; a click's latency runs from the
click to the end of its worker, the CAM and mask layers updated. Each scenario runs in a fresh
process:

- ``impatient``: the first click right after the widget opens (it waits for the model and the
  normalised scans still being prepared in the background);
- ``reader``: the first click after the user has looked at the case until the background work
  is done (the time it took is printed too);

then ``--clicks`` later clicks on other slices: median, p95 and max. The widget starts from
its defaults (a settings file of its own): the fused map and its mask, two layers; with
``--per-sequence`` its "per-sequence maps" are ticked too, ten layers. The bias-field
correction is as the checkpoint says (on for the bundled CAM networks); ``--no-bias-correction``
unticks it, to measure what the correction costs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from equicam.plugin.settings import ENV_VAR


def wait(app, condition, timeout: float = 600.0) -> float:
    """Process Qt events until ``condition()``; the seconds it took."""
    start = time.perf_counter()
    while not condition():
        app.processEvents()
        time.sleep(0.001)
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the widget did not finish in time")
    return time.perf_counter() - start


def scenario(
    case: Path,
    name: str,
    clicks: int,
    checkpoint: str,
    device: str,
    per_sequence: bool,
    bias_correction: bool,
) -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.open(str(case), plugin="napari-equicam")
    _, widget = viewer.window.add_plugin_dock_widget("napari-equicam", "CAM inspector")
    opened = time.perf_counter()
    widget.model.value = checkpoint
    widget.device.value = device
    widget.per_sequence.value = per_sequence
    if not bias_correction:
        widget.bias_correction.value = False
    flair = viewer.layers["FLAIR"]
    with_brain = [z for z in range(flair.data.shape[0]) if flair.data[z].any()]
    slices = np.random.default_rng(0).choice(with_brain, size=clicks + 1, replace=False)

    def idle():
        return widget._worker is None

    def ready():
        models, normalised = list(widget._models.values()), widget._normalised
        return (
            bool(models) and all(f.done() for f in models) and normalised and normalised[1].done()
        )

    if name == "reader":
        print(f"background preparation after the widget opened: {wait(app, ready):.2f} s")
    viewer.dims.current_step = (int(slices[0]), 0, 0)
    start = time.perf_counter()
    widget.run_slice.native.click()
    wait(app, idle)
    first = time.perf_counter() - start
    print(f"first click ({name}, {start - opened:.2f} s after the widget opened): {first:.3f} s")
    if not any(layer.name.startswith("CAM ") for layer in viewer.layers):
        raise RuntimeError("the click made no CAM layer")
    later = []
    for z in slices[1:]:
        viewer.dims.current_step = (int(z), 0, 0)
        start = time.perf_counter()
        widget.run_slice.native.click()
        wait(app, idle)
        later.append(time.perf_counter() - start)
    p95 = float(np.percentile(later, 95))
    print(
        f"later clicks ({len(later)}): median {statistics.median(later):.3f} s, "
        f"p95 {p95:.3f} s, max {max(later):.3f} s, min {min(later):.3f} s"
    )
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--checkpoint", default="equivariant")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--per-sequence", action="store_true", help="tick the widget's per-sequence maps"
    )
    parser.add_argument(
        "--no-bias-correction",
        dest="bias_correction",
        action="store_false",
        help="untick the bias-field correction (default: as the checkpoint says)",
    )
    parser.add_argument("--scenario", choices=("impatient", "reader"), help=argparse.SUPPRESS)
    parser.add_argument("--case", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        scenario(
            args.case,
            args.scenario,
            args.clicks,
            args.checkpoint,
            args.device,
            args.per_sequence,
            args.bias_correction,
        )
        return
    load = os.getloadavg()
    print(
        f"machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load[0]:.1f} at the start; device {args.device}; "
        f"per-sequence maps {'on' if args.per_sequence else 'off'}; bias-field correction "
        f"{'as the checkpoint says' if args.bias_correction else 'off'}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "equicam.cli",
            "synth",
            tmp,
            "--cases",
            "1",
            "--seed",
            "5",
        ]
        subprocess.run(command, check=True, capture_output=True)
        (case,) = Path(tmp).iterdir()
        for name in ("impatient", "reader"):
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--scenario",
                    name,
                    "--case",
                    str(case),
                    "--clicks",
                    str(args.clicks),
                    "--checkpoint",
                    args.checkpoint,
                    "--device",
                    args.device,
                    *(["--per-sequence"] if args.per_sequence else []),
                    *([] if args.bias_correction else ["--no-bias-correction"]),
                ],
                check=True,
                env={**os.environ, ENV_VAR: str(Path(tmp) / "settings.json")},
            )


if __name__ == "__main__":
    main()
