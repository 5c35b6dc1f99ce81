"""Count what hostile inputs and faults do to ``equicam``: the closing count of issue 15.

    PYTHONPATH=src:. .venv/bin/python -m bench.hostile_inputs [--show]

Runs every kind of tests/hostile/ (bad scans, checkpoints, paths and training states, output
faults, saves killed midway, a full disk, two runs at once), each built for real in a fresh
folder, through ``equicam``'s entry point (or ``training.train``'s), and prints: kinds tried,
clear outcomes (one error line naming the file, exit 2; or success where the input is fine),
tracebacks, data losses (a file the user had that changed or went, an output another run
or the user needed that is missing), litter (temporaries left, a folder made for a refused
run).
``--show`` prints each kind's stderr.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from tests.hostile import KINDS, run_kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true", help="print each kind's stderr")
    args = parser.parse_args()
    counts = dict.fromkeys(("tried", "clear", "traceback", "data loss", "litter"), 0)
    unclear = []
    for kind in KINDS:
        with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome = run_kind(kind, Path(root))
        counts["tried"] += 1
        counts["clear"] += outcome.clear
        counts["traceback"] += outcome.traceback
        counts["data loss"] += bool(outcome.lost)
        counts["litter"] += bool(outcome.litter)
        if not outcome.clear:
            unclear.append(kind)
        if args.show:
            print(f"--- {kind}: exit {outcome.status}\n{outcome.stderr.strip()}")
    print(", ".join(f"{name} {value}" for name, value in counts.items()))
    if unclear:
        print("not clear:", "; ".join(unclear))


if __name__ == "__main__":
    main()
