"""Which part of the held-out family's look misleads the guided seed: one factor at a time.

    .venv/bin/python -m bench.family_ablation equivariant --data data/ablation --seed 700 \
        --cases 2,4,5,7,8,10,16,17,9,19 --workers 2 --out docs/results/family_ablation/bundled.md

The same patients (``make_case(seed, index)``) are imaged in the held-out family and in
variants of it that each take one factor from a training family: the bias field's range, the
FLAIR sequence, the T1 sequences, the misregistration; and in ``research-3T`` itself. Every
variant's cases are written at full size under ``DATA/<variant>`` and cached at 96 px (both
kept, and reused when present), then read by :func:`bench.guided_seeds.case_row` under the
checkpoint's ``guided`` settings. A factor whose removal puts the seeds back on the tumours, or
takes the false positives off, is one the training data lack.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.guided_seeds import case_row, show
from equicam.core.checkpoint import load_checkpoint
from equicam.core.prepare import prepare
from equicam.core.refine import refinement_of
from equicam.core.scoring import stratum
from equicam.core.synth import FAMILIES, HELD_OUT, case_id, write_case
from equicam.core.synth.families import FLAIR_3D, MPRAGE, Family
from training.data import SliceCache

BASE = FAMILIES[HELD_OUT]


def _variant(name: str, **changes) -> Family:
    return replace(BASE, name=f"{BASE.name}, {name}", **changes)


VARIANTS: dict[str, Family] = {
    HELD_OUT: BASE,
    "bias-0-0.2": _variant("bias 0-0.2 (clinical-1.5T)", bias=(0.0, 0.2)),
    "flair-3d": _variant("3-D FLAIR (research-3T)", recipes={**BASE.recipes, "flair": FLAIR_3D}),
    "t1-mprage": _variant(
        "MPRAGE T1 and T1ce (research-3T)",
        recipes={**BASE.recipes, "t1": MPRAGE, "t1ce": MPRAGE},
    ),
    "misregistration-0.5": _variant("misregistration 0.5 mm (research-3T)", misregistration=0.5),
    "research-3T": FAMILIES["research-3T"],
}


def _write(job: tuple[Path, str, int, int]) -> None:
    folder, variant, seed, index = job
    if not (folder / case_id(index)).exists():
        write_case(folder, seed, index, "full", VARIANTS[variant])


def build(data: Path, variants: list[str], seed: int, cases: list[int], workers: int) -> None:
    """Write every variant's cases (those not yet there) and cache each variant at 96 px."""
    jobs = [(data / v, v, seed, i) for v in variants for i in cases]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write, jobs))
    for v in variants:
        if not (data / f"{v}_cache").exists():
            prepare(data / v, data / f"{v}_cache", size=96, log=lambda _: None)


def summary_row(variant: str, rows: list[dict]) -> str:
    """One markdown row: seeds on the tumour, guided Dice (all, under 30 cm3), false
    positives of the tumour patients' masks and of the tumour-free patients'."""
    tumours = [r for r in rows if r["cm3"] > 0]
    small = [r["dice"] for r in tumours if stratum(r["cm3"]) == "< 30 cm3"]
    free = [r["fp_cm3"] for r in rows if r["cm3"] == 0]
    return (
        f"| {variant} | {sum(r['hit'] for r in tumours)} / {len(tumours)} "
        f"| {np.mean([r['dice'] for r in tumours]):.3f} "
        f"| {np.mean(small) if small else float('nan'):.3f} ({len(small)}) "
        f"| {np.median([r['fp_cm3'] for r in tumours]):.1f} "
        f"| {' / '.join(f'{f:.1f}' for f in free) or '-'} |"
    )


def patient_table(rows: dict[str, dict[str, dict]]) -> str:
    """Per patient and variant: the guided Dice, marked * when the seed misses the tumour
    (tumour patients), or the false-positive cm3 (tumour-free patients)."""
    variants = list(rows)
    first = rows[variants[0]]
    lines = [
        "| patient | tumour cm3 | " + " | ".join(variants) + " |",
        "| --- | --- | " + " | ".join("---" for _ in variants) + " |",
    ]
    for case in sorted(first, key=lambda c: first[c]["cm3"]):
        cells = []
        for v in variants:
            r = rows[v][case]
            mark = "" if r["hit"] else "*"
            cells.append(f"{r['dice']:.2f}{mark}" if r["cm3"] > 0 else f"{r['fp_cm3']:.1f}")
        lines.append(f"| {case} | {first[case]['cm3']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="'equivariant', 'baseline' or a .safetensors file")
    parser.add_argument("--data", required=True, type=Path, help="folder for cases and caches")
    parser.add_argument("--seed", required=True, type=int, help="seed of the patients")
    parser.add_argument("--cases", required=True, help="case numbers, comma-separated")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"some of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--map", default="fused_weighted", help="map name, e.g. flair")
    parser.add_argument("--workers", type=int, default=1, help="processes writing cases")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {', '.join(unknown)}; use some of {', '.join(VARIANTS)}")
    cases = [int(c) for c in args.cases.split(",")]
    build(args.data, variants, args.seed, cases, args.workers)

    model, meta = load_checkpoint(args.checkpoint)
    refinement = refinement_of(meta, str(args.checkpoint), protocol="guided")
    lines = [
        f"# {args.checkpoint}, {args.map}, guided: the held-out family and its variants",
        "",
        f"Patients {args.cases} of seed {args.seed}, full size, cached at 96 px.",
        "",
        "| variant | seed on the tumour | guided Dice | under 30 cm3 (n) "
        "| false positives cm3, tumour patients (median) | tumour-free patients cm3 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows: dict[str, dict[str, dict]] = {}
    for v in variants:
        rows[v] = {}
        for split in ("train", "val", "test"):
            data = SliceCache(args.data / f"{v}_cache", split, model.modalities)
            for case in data.case_ids:
                images, masks = data.case_slices(case)
                spacing = data.case_spacing(case)
                rows[v][case] = case_row(
                    model, refinement, args.map, images, masks > 0, spacing, "protocol"
                )
        lines.append(summary_row(VARIANTS[v].name, list(rows[v].values())))
    lines += ["", patient_table(rows)]
    show("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
