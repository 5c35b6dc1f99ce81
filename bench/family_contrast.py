"""How each appearance family shows the tissues, as the networks see them.

    .venv/bin/python -m bench.family_contrast --cases 6 --seed 7 \
        --out docs/results/family_contrast.md

The same patients (one seed, case numbers 0 to N-1) are imaged in every family of
:data:`~equicam.core.synth.FAMILIES`, so that the families differ by appearance alone. Each
sequence is z-scored inside the brain as ``equicam prepare`` and inference do; a voxel belongs
to its largest tissue fraction; the table gives, per family and sequence, the median z-score of
each tissue over its voxels, averaged over the patients that have the tissue (``-`` where none
has 50 voxels of it). A network that learnt one family's tissue order meets another's here: a
tissue that is as bright as oedema on one family's FLAIR is a mimic there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.guided_seeds import show
from equicam.core.preprocess import brain_mask, normalise_volume
from equicam.core.synth import FAMILIES, SEQUENCES, make_case
from equicam.core.synth.tissue import TISSUES

SHOWN = ("gm", "wm", "csf", "wmh", "oedema", "nonenhancing", "enhancing", "necrosis")
MIN_VOXELS = 50


def tissue_medians(case) -> dict[str, dict[str, float]]:
    """Sequence -> tissue -> median z-score inside the brain (tissues with enough voxels)."""
    images = {m: case.images[m].astype(np.float32) for m in SEQUENCES}
    brain = brain_mask(images)
    voxels = {t: brain & (case.dominant == TISSUES.index(t)) for t in SHOWN}
    voxels = {t: v for t, v in voxels.items() if np.count_nonzero(v) >= MIN_VOXELS}
    out = {}
    for m in SEQUENCES:
        z = normalise_volume(images[m], brain)
        out[m] = {t: float(np.median(z[v])) for t, v in voxels.items()}
    return out


def table(per_family: dict[str, list[dict]]) -> str:
    """Markdown: one row per family and sequence, one column per tissue, and grey minus white."""
    lines = [
        "| family | sequence | " + " | ".join(SHOWN) + " | gm - wm |",
        "| --- | --- | " + " | ".join("---" for _ in SHOWN) + " | --- |",
    ]
    for family, cases in per_family.items():
        for m in SEQUENCES:
            means = {}
            for tissue in SHOWN:
                values = [c[m][tissue] for c in cases if tissue in c[m]]
                means[tissue] = float(np.mean(values)) if values else None
            cells = [f"{means[t]:+.2f}" if means[t] is not None else "-" for t in SHOWN]
            contrast = means["gm"] - means["wm"]
            lines.append(f"| {family} | {m} | " + " | ".join(cells) + f" | {contrast:+.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6, help="patients per family")
    parser.add_argument("--seed", type=int, default=7, help="seed of the patients")
    parser.add_argument("--size", default="full", choices=("small", "full"), help="grid")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    per_family = {
        family: [
            tissue_medians(make_case(args.seed, i, args.size, family)) for i in range(args.cases)
        ]
        for family in FAMILIES
    }
    text = (
        f"# Median z-score of each tissue: {args.cases} patients (seed {args.seed}, "
        f"{args.size} grid) imaged in every family\n\n" + table(per_family)
    )
    show(text, args.out)


if __name__ == "__main__":
    main()
