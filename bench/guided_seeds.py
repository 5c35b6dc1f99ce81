"""Where the guided mask fails: the CAM component it starts from.

    .venv/bin/python -m bench.guided_seeds equivariant --cache data/val200_cache
    .venv/bin/python -m bench.guided_seeds equivariant --cache data/test_c3t_final_cache \
        --out docs/results/guided_seeds/equivariant_held_out.md

For one map (default the fused weighted one) under a checkpoint's calibrated ``guided``
settings, on every patient of a slice cache (at the cache's resolution, as calibration sees
them): the components of the thresholded map, whether the seed the protocol takes (its
strongest component, or the whole thresholded map) touches the tumour, and the Dice of its
guided mask; beside it, the Dice when the seed is instead the component that overlaps the
tumour most. That second figure knows the answer, so it is no method: for a map seeded from
its strongest component it bounds what a better choice among the map's own components could
give, and it tells a seed in the wrong place from a map that never reaches the tumour. Means
over tumour patients, by size stratum; tumour-free patients by false-positive volume.

``--seed-rule`` starts the guided mask from one component chosen another way, to compare rules
for that choice (the protocol itself has one, ``peak``):

``whole``
    every component (the protocol without ``strongest_only``);
``peak``
    the component that holds the map's highest value (the protocol's ``strongest_only``);
``mean-peak``, ``geometric-peak``
    the component that holds the highest value of the mean (or geometric mean) of the
    sequences' maps: the spot the sequences agree on most;
``mean-sum``
    the component with the largest sum of that mean: agreement times extent.

    .venv/bin/python -m bench.guided_seeds RUN/checkpoint.safetensors --cache OTHER_FAMILY_CACHE \
        --seed-rule mean-sum
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from equicam.core.checkpoint import load_checkpoint
from equicam.core.fusion import fuse
from equicam.core.inference import cam_volume, run_to_end
from equicam.core.mask_edit import label_components, strongest_component
from equicam.core.metrics import dice
from equicam.core.refine import guided_mask, refined_maps, refinement_of
from equicam.core.scoring import STRATA, stratum
from training.data import SliceCache

SEED_RULES = ("protocol", "whole", "peak", "mean-peak", "geometric-peak", "mean-sum")


def seed_component(rule: str, seeds: np.ndarray, level: np.ndarray, maps: dict, settings):
    """The seed the guided mask starts from under ``rule`` (see the module docstring), from
    the thresholded map ``seeds`` (bool), the map ``level`` and the sequences' ``maps``."""
    if rule == "protocol":
        return strongest_component(seeds, level) if settings.strongest_only else seeds
    if rule == "whole":
        return seeds
    if rule == "peak" or not seeds.any():
        return strongest_component(seeds, level)
    agreement = fuse(rule.split("-")[0], maps)
    if rule.endswith("-peak"):
        return strongest_component(seeds, agreement)
    labels, count = label_components(seeds)
    sums = np.bincount(labels.ravel(), agreement.ravel(), minlength=count + 1)
    sums[0] = -np.inf
    return labels == int(np.argmax(sums))


def guided_maps(model, refinement, name: str, volume: dict, spacing):
    """The CAM result of a volume (modality -> normalised ``(Z, Y, X)``) and its maps under
    the ``guided`` protocol, computing only the fusion ``name`` needs."""
    fusions = (name.removeprefix("fused_"),) if name.startswith("fused_") else ()
    result = run_to_end(cam_volume(model, volume, fusions=fusions))
    return result, refined_maps(result, spacing[0], refinement, model.fusion_weights)


def case_row(
    model, refinement, name: str, images: np.ndarray, truth: np.ndarray, spacing, rule: str
):
    """One patient's figures: tumour cm3, components, whether the seed (chosen by ``rule``)
    touches the tumour, the guided Dice from that seed and from the best-overlapping
    component, and the false-positive cm3 of the seed's mask."""
    volume = {m: images[:, i] for i, m in enumerate(model.modalities)}
    result, maps = guided_maps(model, refinement, name, volume, spacing)
    settings = refinement.mask_settings(name)
    level = maps[name]
    seeds = level >= settings.threshold
    sequences = {m: maps[m] for m in model.modalities}
    chosen = seed_component(rule, seeds, level, sequences, settings)
    labels, count = label_components(seeds)
    overlap = np.bincount(labels[truth], minlength=count + 1)
    overlap[0] = 0
    best = labels == int(np.argmax(overlap)) if overlap.any() else chosen
    mask = guided_mask(chosen, result.brain, spacing, settings, volume)
    voxel_cm3 = float(np.prod(spacing)) / 1000
    return {
        "cm3": np.count_nonzero(truth) * voxel_cm3,
        "components": count,
        "hit": bool((chosen & truth).any()),
        "dice": dice(mask, truth),
        "best_dice": dice(guided_mask(best, result.brain, spacing, settings, volume), truth),
        "fp_cm3": np.count_nonzero(mask & ~truth) * voxel_cm3,
    }


def report(rows: dict[str, dict], title: str) -> str:
    """A markdown summary (all tumours and each stratum) and the per-patient table."""
    tumours = {k: r for k, r in rows.items() if r["cm3"] > 0}
    groups = [("all tumours", list(tumours.values()))] + [
        (s, [r for r in tumours.values() if stratum(r["cm3"]) == s]) for s in STRATA
    ]
    lines = [
        f"# {title}",
        "",
        "| patients | n | seed on the tumour | guided Dice | Dice, seed on the tumour's"
        " component |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, group in groups:
        if group:
            lines.append(
                f"| {label} | {len(group)} | {sum(r['hit'] for r in group)} "
                f"| {np.mean([r['dice'] for r in group]):.3f} "
                f"| {np.mean([r['best_dice'] for r in group]):.3f} |"
            )
    free = [r["fp_cm3"] for r in rows.values() if r["cm3"] == 0]
    if free:
        lines.append(
            f"\nTumour-free patients: {len(free)}, false positives {np.median(free):.1f} cm3 "
            f"median (max {max(free):.1f})."
        )
    lines += [
        "",
        "| patient | tumour cm3 | components | seed on the tumour | guided Dice | best Dice "
        "| false positives cm3 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case_id, r in sorted(rows.items(), key=lambda kv: kv[1]["cm3"]):
        scores = (
            f"{'yes' if r['hit'] else 'no'} | {r['dice']:.3f} | {r['best_dice']:.3f}"
            if r["cm3"] > 0
            else "- | - | -"
        )
        lines.append(
            f"| {case_id} | {r['cm3']:.1f} | {r['components']} | {scores} | {r['fp_cm3']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def show(text: str, out: Path | None) -> None:
    """Print a markdown report and, with ``out``, write it there too (folders made)."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="'equivariant', 'baseline' or a .safetensors file")
    parser.add_argument("--cache", required=True, type=Path, help="slice cache of the patients")
    parser.add_argument("--splits", default="train,val,test", help="the cache's splits to use")
    parser.add_argument("--map", default="fused_weighted", help="map name, e.g. flair")
    parser.add_argument(
        "--seed-rule", default="protocol", choices=SEED_RULES, help="how the seed is chosen"
    )
    parser.add_argument("--out", type=Path, help="also write the report here (markdown)")
    args = parser.parse_args()
    model, meta = load_checkpoint(args.checkpoint)
    refinement = refinement_of(meta, str(args.checkpoint), protocol="guided")
    rows = {}
    for split in args.splits.split(","):
        data = SliceCache(args.cache, split, model.modalities)
        for case_id in data.case_ids:
            images, masks = data.case_slices(case_id)
            rows[case_id] = case_row(
                model,
                refinement,
                args.map,
                images,
                masks > 0,
                data.case_spacing(case_id),
                args.seed_rule,
            )
    rule = "" if args.seed_rule == "protocol" else f", seed rule {args.seed_rule}"
    text = report(rows, f"{args.checkpoint}, {args.map}, guided{rule}, on {args.cache}")
    show(text, args.out)


if __name__ == "__main__":
    main()
