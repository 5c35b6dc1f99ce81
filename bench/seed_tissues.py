"""What the guided mask's seed lies on, in synthetic cases: the generator's own tissue map.

    .venv/bin/python -m bench.seed_tissues equivariant --data data/test_c3t --seed 100 \
        --family clinical-3T --cases 4,5,8,14,36,38,44,45,29,49

For each case (written by ``equicam synth DIR --seed S --family F``, at full size), the maps
under the checkpoint's ``guided`` settings at 1 mm as ``equicam evaluate`` makes them, the
components of the thresholded map (default the fused weighted one), and for the seed (the
component the protocol starts from: the strongest, or the whole thresholded map) its volume,
the fraction of it inside the tumour, the tissues under it (each voxel's largest tissue
fraction, regenerated with ``make_case`` from the seed, case number and family) and the mean
z-score of each sequence over it. Tells a seed on a mimic (white-matter hyperintensities,
vessels) from one on normal tissue made bright by the family's contrast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.guided_seeds import guided_maps, seed_component
from equicam.core.brats import find_cases, load_case
from equicam.core.checkpoint import load_checkpoint
from equicam.core.evaluation import bias_correction_of, normalised_images
from equicam.core.refine import refinement_of
from equicam.core.synth import make_case
from equicam.core.synth.tissue import TISSUES


def seed_row(model, meta, refinement, name: str, case, dominant: np.ndarray) -> str:
    """One markdown row: the case's tumour and its seed's volume, tumour fraction, tissues
    (share of the seed, the three largest) and mean z-score per sequence."""
    images = normalised_images(case, model.modalities, bias_correction_of(meta))
    _, maps = guided_maps(model, refinement, name, images, case.spacing)
    settings = refinement.mask_settings(name)
    seed = seed_component("protocol", maps[name] >= settings.threshold, maps[name], {}, settings)
    voxel_cm3 = float(np.prod(case.spacing)) / 1000
    truth = case.whole_tumour
    size = np.count_nonzero(seed)
    if not size:
        return f"| {case.case_id} | {np.count_nonzero(truth) * voxel_cm3:.1f} | 0 | - | - | - |"
    kinds = np.bincount(dominant[seed & (dominant < len(TISSUES))], minlength=len(TISSUES))
    top = [f"{TISSUES[k]} {kinds[k] / size:.0%}" for k in np.argsort(kinds)[::-1][:3] if kinds[k]]
    z = " ".join(f"{m} {images[m][seed].mean():+.1f}" for m in model.modalities)
    return (
        f"| {case.case_id} | {np.count_nonzero(truth) * voxel_cm3:.1f} | {size * voxel_cm3:.1f} "
        f"| {np.count_nonzero(seed & truth) / size:.2f} | {', '.join(top)} | {z} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="'equivariant', 'baseline' or a .safetensors file")
    parser.add_argument("--data", required=True, type=Path, help="the cases' folder")
    parser.add_argument("--seed", required=True, type=int, help="the seed they were made with")
    parser.add_argument("--family", required=True, help="the family they were made in")
    parser.add_argument("--cases", required=True, help="case numbers, comma-separated")
    parser.add_argument("--map", default="fused_weighted", help="map name, e.g. flair")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    model, meta = load_checkpoint(args.checkpoint)
    refinement = refinement_of(meta, str(args.checkpoint), protocol="guided")
    files = {f.case_id: f for f in find_cases(args.data)}
    lines = [
        f"# {args.checkpoint}, {args.map}, guided: the seed of each case of {args.data}",
        "",
        "| case | tumour cm3 | seed cm3 | seed in tumour | tissues under the seed | mean z |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for index in (int(i) for i in args.cases.split(",")):
        case_id = f"BraTS2021_{index:05d}"
        if case_id not in files:
            parser.error(f"{args.data} has no case {case_id}")
        case = load_case(files[case_id], model.modalities)
        synthetic = make_case(args.seed, index, "full", args.family)
        dominant = case.geometry.to_display(synthetic.dominant)
        lines.append(seed_row(model, meta, refinement, args.map, case, dominant))
        print(lines[-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
