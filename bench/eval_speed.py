"""How long does ``equicam evaluate`` take per case, against ``equicam cam`` on the same case?

    PYTHONPATH=src .venv/bin/python bench/eval_speed.py [--checkpoint equivariant] \\
        [--workers 2] [--repeats 3] [--device cpu]

Writes two full-size synthetic cases (``equicam synth --cases 2 --seed 5``, 240 x 240 x 155),
then runs, in turns, round after round, each command in a fresh process as a user runs it:

1. ``equicam cam`` on the first case (load, CAM, write the NIfTI files);
2. ``equicam evaluate`` on a folder holding the first case alone (one worker);
3. ``equicam evaluate --workers N`` on both cases (time per case = wall time / 2).

It prints, with the machine, the median (min-max) of each, the round-by-round ratio
evaluate / cam, and the hours that 1,251 cases (BraTS 2021) would take at each rate.
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

BRATS_2021 = 1251


def run(arguments: list[str]) -> float:
    """Wall time of ``python -m equicam.cli arguments`` in seconds."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "equicam.cli", *arguments], check=True, capture_output=True
    )
    return time.perf_counter() - start


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="equivariant")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load[0]:.1f} at the start; device {args.device}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run(["synth", str(tmp / "all"), "--cases", "2", "--seed", "5"])
        first = sorted((tmp / "all").iterdir())[0]
        (tmp / "one").mkdir()
        (tmp / "one" / first.name).symlink_to(first)
        common = ["--checkpoint", args.checkpoint, "--device", args.device]
        cam, one, many = [], [], []
        for round_ in range(args.repeats):
            cam.append(run(["cam", str(first), "--out", str(tmp / f"cam{round_}"), *common]))
            one.append(
                run(["evaluate", str(tmp / "one"), "--out", str(tmp / f"e{round_}"), *common])
            )
            wall = run(
                [
                    "evaluate",
                    str(tmp / "all"),
                    "--out",
                    str(tmp / f"w{round_}"),
                    "--workers",
                    str(args.workers),
                    *common,
                ]
            )
            many.append(wall / 2)
            print(
                f"round {round_ + 1}: cam {cam[-1]:.1f} s, evaluate {one[-1]:.1f} s, "
                f"{args.workers} workers {many[-1]:.1f} s per case",
                flush=True,
            )
    print(f"{'cam, one case (s)':44s} {spread(cam)}")
    print(f"{'evaluate, 1 worker, per case (s)':44s} {spread(one)}")
    print(f"{f'evaluate, {args.workers} workers, per case (s)':44s} {spread(many)}")
    for label, times in (("1 worker", one), (f"{args.workers} workers", many)):
        ratios = [e / c for e, c in zip(times, cam, strict=True)]
        print(f"{f'evaluate / cam, {label}':44s} {spread(ratios)}")
    for label, times in (("1 worker", one), (f"{args.workers} workers", many)):
        hours = [t * BRATS_2021 / 3600 for t in times]
        print(f"{f'{BRATS_2021} cases, {label} (hours)':44s} {spread(hours)}")


if __name__ == "__main__":
    main()
