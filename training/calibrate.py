"""Choose a checkpoint's mask thresholds and fusion weights on validation patients.

    python -m training.calibrate CHECKPOINT --cache DIR --out NEW.safetensors

Training calls :func:`calibrate` after its last epoch; the command does the same for an existing
checkpoint (a cache of your own validation patients, or one trained before the weights existed)
and writes a new file: the checkpoint it reads is never overwritten.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from equicam.core.evaluation import SWEEP
from equicam.core.fusion import FUSIONS, fuse_weighted
from equicam.core.inference import cam_volume, run_to_end
from equicam.core.metrics import dice
from training.data import SliceCache

WEIGHT_STEPS = 4  # weights in quarters: 35 candidates for four modalities


def weight_grid(modalities, steps: int = WEIGHT_STEPS) -> list[dict[str, float]]:
    """Every weighting of ``modalities`` in multiples of ``1/steps`` that sums to 1."""
    return [
        {m: k / steps for m, k in zip(modalities, ks, strict=True)}
        for ks in itertools.product(range(steps + 1), repeat=len(modalities))
        if sum(ks) == steps
    ]


def calibrate(model, data: SliceCache, device: str) -> dict:
    """Best threshold per map, and the best fusion weights, on the split's patients.

    Every map (each modality, each fusion of :data:`~equicam.core.fusion.FUSIONS`) gets the
    threshold of :data:`SWEEP` with the highest mean 3-D Dice over the patients with tumour.
    The ``weighted`` fusion gets the weights (and threshold) of :func:`weight_grid` with the
    highest mean Dice; the grid holds the plain mean and each single modality, so on this
    split it is at least as good as either.

    Returns
    -------
    dict
        ``{"maps": {name: {"threshold", "dice"}}, "fusion_weights": {modality: weight}}``;
        fused maps are named ``fused_<fusion>``.
    """
    per_case = []
    for case_id in data.case_ids:
        images, masks = data.case_slices(case_id)
        if not masks.any():
            continue
        volume = {m: images[:, i] for i, m in enumerate(model.modalities)}
        result = run_to_end(cam_volume(model, volume, device=device, fusions=tuple(FUSIONS)))
        per_case.append((result, masks > 0))
    if not per_case:
        return {"maps": {}, "fusion_weights": None}
    best = {
        name: _best_threshold([(r.all_maps()[name], truth) for r, truth in per_case])
        for name in per_case[0][0].all_maps()
    }
    candidates = [
        (_best_threshold([(fuse_weighted(r.maps, w), truth) for r, truth in per_case]), w)
        for w in weight_grid(model.modalities)
    ]
    best["fused_weighted"], weights = max(candidates, key=lambda c: c[0]["dice"])
    return {"maps": best, "fusion_weights": weights}


def _best_threshold(cases: list) -> dict:
    """The threshold of :data:`SWEEP` with the best mean Dice over ``(map, truth)`` pairs."""
    scores = {t: float(np.mean([dice(m >= t, truth) for m, truth in cases])) for t in SWEEP}
    t = max(scores, key=scores.get)
    return {"threshold": t, "dice": scores[t]}


def main(argv=None) -> None:
    """Command line: ``CHECKPOINT --cache DIR --out FILE [--device D]``."""
    from equicam.core.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
    from equicam.core.device import resolve_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="'equivariant', 'baseline' or a .safetensors file")
    parser.add_argument("--cache", required=True, help="slice cache of `equicam prepare`")
    parser.add_argument("--out", required=True, type=Path, help="new .safetensors file")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, device=device)
    if args.out.exists() and args.out.resolve() == resolve_checkpoint(args.checkpoint).resolve():
        parser.error(f"{args.out}: refusing to overwrite the checkpoint being calibrated")
    data = SliceCache(args.cache, "val", model.modalities)
    chosen = calibrate(model, data, device)
    if chosen["fusion_weights"] is None:
        parser.error(f"{args.cache}: its validation split has no patient with tumour")
    model.fusion_weights = chosen["fusion_weights"]
    meta = {
        **meta,
        "thresholds": {k: v["threshold"] for k, v in chosen["maps"].items()},
        "val_dice": {k: v["dice"] for k, v in chosen["maps"].items()},
        "calibrated_on": {"cache": str(args.cache), "val_cases": len(data.case_ids)},
    }
    path = save_checkpoint(args.out, model.cpu(), meta)
    print(
        f"wrote {path}: fusion weights "
        + " ".join(f"{m} {w:.2f}" for m, w in chosen["fusion_weights"].items())
        + "; val Dice "
        + " ".join(f"{k} {v['dice']:.3f}" for k, v in chosen["maps"].items())
    )


if __name__ == "__main__":
    main()
