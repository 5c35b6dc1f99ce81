"""How the bias-field correction's polynomial degree moves the guided mask, per patient.

    .venv/bin/python -m bench.bias_degree equivariant --data data/dev700 --degrees 0,2,3 \
        --out docs/results/bias_correction/degree_dev700.md

For each case under ``--data`` (with a segmentation), the checkpoint's guided mask of one map
(default the fused weighted one) on the slice-cache grid (96 px, as ``equicam prepare`` makes
it), with each sequence divided by :func:`equicam.core.preprocess.bias_field` of each degree
before normalising (degree 0: no correction). Chooses the degree on patients that are not the
test set; ``equicam evaluate --bias-correction`` then runs the chosen one at full size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.guided_seeds import case_row, show
from equicam.core.brats import find_cases, load_case
from equicam.core.checkpoint import load_checkpoint
from equicam.core.prepare import cached_spacing, case_slices
from equicam.core.refine import refinement_of
from equicam.core.scoring import stratum

SIZE = 96


def cache_slices(case, modalities, degree: int):
    """The case's brain slices as the cache holds them ``(n, M, S, S)``, each sequence first
    divided by its bias field of ``degree`` (0: not), its mask ``(n, S, S)`` and spacing."""
    slices = case_slices(case, modalities, SIZE, degree)
    spacing = cached_spacing(case.spacing, case.images[modalities[0]].shape, SIZE)
    return slices["images"].astype(np.float32), slices["masks"] > 0, spacing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="'equivariant', 'baseline' or a .safetensors file")
    parser.add_argument("--data", required=True, type=Path, help="folder of cases")
    parser.add_argument("--degrees", default="0,2,3", help="degrees to compare (0: none)")
    parser.add_argument("--map", default="fused_weighted", help="map name, e.g. flair")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    degrees = [int(d) for d in args.degrees.split(",")]
    model, meta = load_checkpoint(args.checkpoint)
    refinement = refinement_of(meta, str(args.checkpoint), protocol="guided")
    rows: dict[int, dict[str, dict]] = {d: {} for d in degrees}
    for files in find_cases(args.data):
        if files.seg is None:
            continue
        case = load_case(files, model.modalities)
        cm3 = np.count_nonzero(case.whole_tumour) * float(np.prod(case.spacing)) / 1000
        for d in degrees:
            images, truth, spacing = cache_slices(case, model.modalities, d)
            row = case_row(model, refinement, args.map, images, truth, spacing, "protocol")
            rows[d][files.case_id] = {**row, "cm3": cm3}
    lines = [
        f"# {args.checkpoint}, {args.map}, guided, bias-field degree, on {args.data}",
        "",
        "| degree | tumour patients | guided Dice | under 30 cm3 | 30 cm3 or more "
        "| tumour-free FP cm3 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for d in degrees:
        tumours = [r for r in rows[d].values() if r["cm3"] > 0]
        small = [r["dice"] for r in tumours if stratum(r["cm3"]) == "< 30 cm3"]
        large = [r["dice"] for r in tumours if stratum(r["cm3"]) != "< 30 cm3"]
        free = [f"{r['fp_cm3']:.1f}" for r in rows[d].values() if r["cm3"] == 0]
        lines.append(
            f"| {d or 'none'} | {len(tumours)} | {np.mean([r['dice'] for r in tumours]):.3f} "
            f"| {np.mean(small) if small else float('nan'):.3f} "
            f"| {np.mean(large) if large else float('nan'):.3f} | {' / '.join(free) or '-'} |"
        )
    lines += ["", "| patient | tumour cm3 | " + " | ".join(f"degree {d}" for d in degrees) + " |"]
    lines.append("| --- | --- | " + " | ".join("---" for _ in degrees) + " |")
    first = rows[degrees[0]]
    for case_id in sorted(first, key=lambda c: first[c]["cm3"]):
        cells = [
            f"{rows[d][case_id]['dice']:.2f}"
            if first[case_id]["cm3"] > 0
            else f"FP {rows[d][case_id]['fp_cm3']:.1f}"
            for d in degrees
        ]
        lines.append(f"| {case_id} | {first[case_id]['cm3']:.1f} | " + " | ".join(cells) + " |")
    show("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
