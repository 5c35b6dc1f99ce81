"""Choose a checkpoint's mask thresholds and fusion weights on validation patients.

    python -m training.calibrate CHECKPOINT --cache DIR --out NEW.safetensors [--splits val]
        [--bias-correction]

Training calls :func:`calibrate` after its last epoch; the command does the same for an existing
checkpoint (a cache of your own validation patients, or one trained before the weights or the
refined protocol existed) and writes a new file: the checkpoint it reads is never overwritten.
For a second stage (``second-stage`` or a file of ``training.train_segnet``) it chooses the
threshold and the input sizes instead (:func:`~equicam.core.segnet_fit.best_setting`).
The cache must be prepared as the checkpoint's inputs are (``bias_correction``);
``--bias-correction`` makes a checkpoint of uncorrected training take corrected inputs from now
on, calibrated on a cache of ``equicam prepare --bias-correction``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from equicam.core.evaluation import SWEEP
from equicam.core.fusion import FUSIONS, fuse_weighted
from equicam.core.inference import cam_volume, run_to_end
from equicam.core.mask_edit import distance_to, strongest_component
from equicam.core.metrics import dice
from equicam.core.refine import MaskSettings, Refinement, refined_maps, refined_mask
from training.data import SliceCache

WEIGHT_STEPS = 4  # weights in quarters: 35 candidates for four modalities
# The refined protocol's search grid (see calibrate_refined).
Z_SIGMAS_MM = (0.0, 4.0, 8.0)
GATES = (0.3, 0.5, 0.7)
THRESHOLDS = tuple(float(round(t, 2)) for t in np.arange(0.1, 0.81, 0.1))
COMPONENTS = ((False, 0.0), (False, 500.0), (True, 0.0))  # (largest only, min size mm3)
GROWS_MM = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0)
DICE_TOLERANCE = 0.005  # Dice this close to the best counts as a tie
# The guided protocol's: sequences whose bright regions may outline the tumour, their z-scores.
GUIDES = ("flair", "t2")
GUIDE_ZS = tuple(float(round(z, 1)) for z in np.arange(0.6, 2.41, 0.2))
GUIDE_REACHES_MM = (0.0, 15.0, 30.0)  # 0: the whole bright region


def weight_grid(modalities, steps: int = WEIGHT_STEPS) -> list[dict[str, float]]:
    """Every weighting of ``modalities`` in multiples of ``1/steps`` that sums to 1."""
    return [
        {m: k / steps for m, k in zip(modalities, ks, strict=True)}
        for ks in itertools.product(range(steps + 1), repeat=len(modalities))
        if sum(ks) == steps
    ]


def calibrate(
    model, data: SliceCache | Sequence[SliceCache], device: str, *, refine=False
) -> dict:
    """Best threshold per map, the best fusion weights and, with ``refine``, the refined
    protocol's settings, on the split's patients.

    Every map (each modality, each fusion of :data:`~equicam.core.fusion.FUSIONS`) gets the
    threshold of :data:`SWEEP` with the highest mean 3-D Dice over the patients with tumour.
    The ``weighted`` fusion gets the weights (and threshold) of :func:`weight_grid` with the
    highest mean Dice; the grid holds the plain mean and each single modality, so on this
    split it is at least as good as either. ``refine`` adds :func:`calibrate_refined`, which
    also looks at the tumour-free patients, and :func:`calibrate_guided`.

    Parameters
    ----------
    model
        The multi-modal CAM model.
    data
        One split of a slice cache, or several.
    device
        A torch device string.
    refine
        Also calibrate the ``refined`` protocol (slower: a grid search per map).

    Returns
    -------
    dict
        ``{"maps": {name: {"threshold", "dice"}}, "fusion_weights": {modality: weight}}``;
        fused maps are named ``fused_<fusion>``. With ``refine``, also ``refined`` and
        ``guided`` (the checkpoint entries of :mod:`equicam.core.refine`, each map with its
        validation ``dice``) and ``protocol``: the one with the highest validation Dice of the
        fused mean.
    """
    splits = [data] if isinstance(data, SliceCache) else list(data)
    cases, scans = [], []
    for split in splits:
        for case_id in split.case_ids:
            images, masks = split.case_slices(case_id)
            if not masks.any() and not refine:
                continue
            volume = {m: images[:, i] for i, m in enumerate(model.modalities)}
            result = run_to_end(cam_volume(model, volume, device=device, fusions=tuple(FUSIONS)))
            cases.append((result, masks > 0, split.case_spacing(case_id)))
            scans.append(volume)
    per_case = [(r, truth) for r, truth, _ in cases if truth.any()]
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
    chosen = {"maps": best, "fusion_weights": weights}
    if refine:
        for result, _, _ in cases:
            result.fused["weighted"] = fuse_weighted(result.maps, weights)
        chosen["refined"] = calibrate_refined(cases, weights)
        guided = calibrate_guided(cases, scans, weights)
        if guided["maps"]:
            chosen["guided"] = guided
        dices = {"paper": best.get("fused_mean", {"dice": 0.0})["dice"]}
        for protocol in ("refined", "guided"):
            if protocol in chosen:
                dices[protocol] = chosen[protocol]["maps"].get("fused_mean", {"dice": 0.0})["dice"]
        chosen["protocol"] = max(dices, key=dices.get)
    return chosen


def _best_threshold(cases: list) -> dict:
    """The threshold of :data:`SWEEP` with the best mean Dice over ``(map, truth)`` pairs."""
    scores = {t: float(np.mean([dice(m >= t, truth) for m, truth in cases])) for t in SWEEP}
    t = max(scores, key=scores.get)
    return {"threshold": t, "dice": scores[t]}


def _pick(candidates: list[tuple[float, float, object]]) -> tuple[float, float, object]:
    """The best ``(dice, fp_cm3, item)``: within :data:`DICE_TOLERANCE` of the best Dice, the
    fewest false positives on tumour-free patients, then the higher Dice."""
    top = max(c[0] for c in candidates)
    close = [c for c in candidates if c[0] >= top - DICE_TOLERANCE]
    return min(close, key=lambda c: (c[1], -c[0]))


def _gates() -> list[Refinement]:
    """Every slice gate of the search: :data:`Z_SIGMAS_MM` x :data:`GATES`."""
    return [Refinement(z, g) for z, g in itertools.product(Z_SIGMAS_MM, GATES)]


def _pick_gate(scored: list[tuple[float, Refinement]]) -> Refinement:
    """The best gate of ``(score, gate)`` pairs: within :data:`DICE_TOLERANCE` of the best
    score, the least smoothing along z, then the higher score. A small lesion spans few
    slices, and smoothing pulls them under the gate; validation patients, most of them with
    larger tumours, rarely see the difference, so a tie must not choose it."""
    top = max(score for score, _ in scored)
    close = [(score, gate) for score, gate in scored if score >= top - DICE_TOLERANCE]
    return min(close, key=lambda c: (c[1].z_sigma_mm, -c[0]))[1]


def _case_score(mask: np.ndarray, truth: np.ndarray, spacing) -> tuple[str, float]:
    """``("dice", Dice)`` for a tumour patient, ``("fp", cm3 of mask)`` for a tumour-free one."""
    return _count_score(
        int(mask.sum()), int(np.count_nonzero(mask & truth)), int(truth.sum()), spacing
    )


def _count_score(size: int, overlap: int, truth_size: int, spacing) -> tuple[str, float]:
    """:func:`_case_score` from voxel counts: the mask's, its overlap with the truth's, the
    truth's."""
    if truth_size:
        return "dice", 2.0 * overlap / (size + truth_size)
    return "fp", float(size * np.prod(spacing) / 1000.0)


def _mean_scores(scores: list[tuple[str, float]]) -> tuple[float, float]:
    """Mean Dice over tumour patients, mean false-positive cm3 over tumour-free ones."""
    dices = [v for kind, v in scores if kind == "dice"]
    fps = [v for kind, v in scores if kind == "fp"]
    return float(np.mean(dices)), float(np.mean(fps)) if fps else 0.0


def _score(masks: list, truths: list, spacings: list) -> tuple[float, float]:
    """:func:`_mean_scores` of masks against their truths."""
    return _mean_scores(
        [_case_score(m, t, s) for m, t, s in zip(masks, truths, spacings, strict=True)]
    )


def calibrate_refined(cases: list, weights: dict | None) -> dict:
    """The ``refined`` protocol's settings with the best validation Dice.

    First the gate (:func:`_gates`), scored by each map's best plain threshold averaged over
    maps, ties going as in :func:`_pick_gate`; then, per map, threshold x components x growth.
    Ties within :data:`DICE_TOLERANCE` of the best Dice go to fewer false positives on
    tumour-free patients.

    Parameters
    ----------
    cases
        ``(CamResult, truth, spacing)`` of each validation patient, tumour-free ones included.
    weights
        Fusion weights of the ``weighted`` fusion.

    Returns
    -------
    dict
        The checkpoint's ``refined`` entry (see :mod:`equicam.core.refine`); each map's entry
        also holds its validation ``dice`` and ``fp_cm3``.
    """
    truths = [truth for _, truth, _ in cases]
    spacings = [spacing for _, _, spacing in cases]
    scored = []
    for refinement in _gates():
        maps = [refined_maps(r, s[0], refinement, weights) for r, _, s in cases]
        per_map = []
        for name in maps[0]:
            candidates = [
                (*_score([m[name] >= t for m in maps], truths, spacings), t) for t in THRESHOLDS
            ]
            per_map.append(_pick(candidates)[0])
        scored.append((float(np.mean(per_map)), refinement))
    refinement = _pick_gate(scored)
    maps = [refined_maps(r, s[0], refinement, weights) for r, _, s in cases]
    chosen = {}
    for name in maps[0]:
        candidates = []
        for t, (largest, min_mm3) in itertools.product(THRESHOLDS, COMPONENTS):
            scores = {g: [] for g in GROWS_MM}  # one growth's scores, case by case
            for case_maps, (result, truth, spacing) in zip(maps, cases, strict=True):
                settings = MaskSettings(t, largest, min_mm3)
                kept = refined_mask(case_maps[name], result.brain, spacing, settings)
                distance = distance_to(kept, spacing, max(GROWS_MM))
                for g in GROWS_MM:
                    mask = (distance <= g) & result.brain if g else kept
                    scores[g].append(_case_score(mask, truth, spacing))
            for g, per_case in scores.items():
                candidates.append((*_mean_scores(per_case), MaskSettings(t, largest, min_mm3, g)))
        d, fp, settings = _pick(candidates)
        chosen[name] = {**settings.to_dict(), "dice": d, "fp_cm3": fp}
    return {"z_sigma_mm": refinement.z_sigma_mm, "gate": refinement.gate, "maps": chosen}


def calibrate_guided(cases: list, scans: list, weights: dict | None) -> dict:
    """The ``guided`` protocol's settings with the best validation Dice.

    The search runs over the slice gate (:func:`_gates`) and, per map, seed threshold x the
    whole seed or its strongest component x guide sequence (:data:`GUIDES` the scans hold) x
    guide z-score x reach (:data:`GUIDE_REACHES_MM`). One gate serves every map: the best by
    each map's best Dice, averaged over maps, ties going as in :func:`_pick_gate`. Within a
    gate, ties as in :func:`calibrate_refined`.

    Parameters
    ----------
    cases
        ``(CamResult, truth, spacing)`` of each validation patient, tumour-free ones included.
    scans
        Modality -> normalised volume ``(Z, Y, X)`` of each case, in the order of ``cases``.
    weights
        Fusion weights of the ``weighted`` fusion.

    Returns
    -------
    dict
        The checkpoint's ``guided`` entry; empty ``maps`` when no scan holds a guide sequence.
    """
    guides = [g for g in GUIDES if all(g in scan for scan in scans)]
    if not guides:
        return {"z_sigma_mm": 0.0, "gate": GATES[0], "maps": {}}
    # (gate, map, threshold, strongest, guide, z, reach) -> score of each case
    scores: dict = {}
    for (result, truth, spacing), scan in zip(cases, scans, strict=True):
        truth_size = int(np.count_nonzero(truth))
        bright = _bright_regions(result.brain, scan, guides, truth)
        for refinement in _gates():
            maps = refined_maps(result, spacing[0], refinement, weights)
            for name, volume in maps.items():
                for t, strongest_only, counts in _seed_counts(volume, spacing, bright):
                    for (guide, z, r), count in counts.items():
                        key = (refinement, name, t, strongest_only, guide, z, r)
                        score = _count_score(*count, truth_size, spacing)
                        scores.setdefault(key, []).append(score)
    candidates: dict = {}  # gate -> map -> [(dice, fp, settings)]
    for (gate, name, t, strongest, guide, z, r), per_case in scores.items():
        settings = MaskSettings(
            t, guide=guide, guide_z=z, guide_reach_mm=r, strongest_only=strongest
        )
        per_map = candidates.setdefault(gate, {})
        per_map.setdefault(name, []).append((*_mean_scores(per_case), settings))
    picked = {
        gate: {name: _pick(c) for name, c in per_map.items()}
        for gate, per_map in candidates.items()
    }
    refinement = _pick_gate(
        [(float(np.mean([d for d, _, _ in p.values()])), gate) for gate, p in picked.items()]
    )
    chosen = {
        name: {**settings.to_dict(), "dice": d, "fp_cm3": fp}
        for name, (d, fp, settings) in picked[refinement].items()
    }
    return {"z_sigma_mm": refinement.z_sigma_mm, "gate": refinement.gate, "maps": chosen}


def _seed_counts(volume: np.ndarray, spacing, bright: dict):
    """``(threshold, strongest_only, counts)`` for each seed threshold of a map ``(Z, Y, X)``:
    the :func:`_guided_counts` of the whole thresholded map and of its strongest component
    (the same counts, not computed again, when that component is the whole seed)."""
    for t in THRESHOLDS:
        seed = volume >= t
        whole = _guided_counts(seed, spacing, bright)
        strongest = strongest_component(seed, volume)
        yield t, False, whole
        if np.count_nonzero(strongest) < np.count_nonzero(seed):
            yield t, True, _guided_counts(strongest, spacing, bright)
        else:
            yield t, True, whole


def _guided_counts(seed: np.ndarray, spacing, bright: dict) -> dict:
    """``(guide, z, reach) -> (voxels, voxels in the truth)`` of the guided mask of ``seed``,
    for every labelling of bright regions in ``bright`` (see :func:`_bright_regions`) and every
    reach of :data:`GUIDE_REACHES_MM`."""
    distance = distance_to(seed, spacing, max(GUIDE_REACHES_MM)).ravel()
    seed_at = np.flatnonzero(seed)
    counts = {}
    for (guide, z), (labels, at, size, overlap, in_truth) in bright.items():
        touched = np.zeros(size.size, dtype=bool)
        touched[labels[seed_at]] = True
        touched[0] = False
        counts[guide, z, 0.0] = (int(size[touched].sum()), int(overlap[touched].sum()))
        inside = touched[labels[at]]
        near, near_truth = distance[at[inside]], in_truth[inside]
        for r in GUIDE_REACHES_MM:
            if r > 0:
                within = near <= r
                counts[guide, z, r] = (
                    int(np.count_nonzero(within)),
                    int(np.count_nonzero(within & near_truth)),
                )
    return counts


def _bright_regions(brain: np.ndarray, scan: dict, guides: list, truth: np.ndarray) -> dict:
    """``(guide, z) -> (flat labels, flat indices of the bright voxels, voxels and voxels in
    the truth of each label, which bright voxels are in the truth)`` for every guide and
    z-score of the search: what :func:`_guided_counts` needs of the connected bright regions."""
    truth_at = truth.ravel()
    bright = {}
    for guide, z in itertools.product(guides, GUIDE_ZS):
        labels = ndimage.label(brain & (scan[guide] >= z))[0].ravel()
        at = np.flatnonzero(labels)
        size = np.bincount(labels)
        overlap = np.bincount(labels[truth_at], minlength=size.size)
        bright[guide, z] = (labels, at, size, overlap, truth_at[at])
    return bright


def calibration_metadata(chosen: dict) -> dict:
    """The checkpoint metadata fields of a :func:`calibrate` result: per-map ``thresholds`` and
    ``val_dice``, and with refinement the ``refined`` and ``guided`` settings and the default
    ``protocol``."""
    meta = {
        "thresholds": {k: v["threshold"] for k, v in chosen["maps"].items()},
        "val_dice": {k: v["dice"] for k, v in chosen["maps"].items()},
    }
    if "refined" in chosen:
        meta["refined"] = chosen["refined"]
        meta["protocol"] = chosen["protocol"]
    if "guided" in chosen:
        meta["guided"] = chosen["guided"]
    return meta


def calibrate_second_stage(
    parser, source: Path, cache, splits, out: Path, device: str, bias_correction: bool
) -> None:
    """Choose a second stage's input sizes and threshold on ``splits`` of ``cache`` and write
    it, so chosen, to ``out`` (with ``bias_correction``: taking corrected inputs)."""
    from equicam.core.segnet import load_segnet, save_segnet
    from training.train_segnet import choose_setting

    model, meta = load_segnet(source, device)
    meta = {**meta, "bias_correction": bias_correction or meta.get("bias_correction", False)}
    data = [SliceCache(cache, split, model.modalities) for split in splits]
    data[0].check_preprocessing(meta, source)
    chosen = choose_setting(model, data, device)
    if chosen["dice"] is None:
        parser.error(f"{cache}: its {','.join(splits)} split has no patient with tumour")
    meta = {
        **meta,
        "threshold": chosen["threshold"],
        "val_dice": chosen["dice"],
        "calibrated_on": {
            "cache": str(cache),
            "splits": list(splits),
            "val_cases": sum(len(d.case_ids) for d in data),
        },
    }
    path = save_segnet(out, model.cpu(), meta)
    print(
        f"wrote {path}: input sizes {list(chosen['input_sizes'])}, threshold "
        f"{chosen['threshold']}, val Dice {chosen['dice']:.3f}"
    )


def main(argv=None) -> None:
    """Command line: ``CHECKPOINT --cache DIR --out FILE [--splits S,..] [--device D]``."""
    from equicam.core.checkpoint import (
        SECOND_STAGE,
        load_checkpoint,
        read_metadata,
        resolve_checkpoint,
        save_checkpoint,
    )
    from equicam.core.device import resolve_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint", help="'equivariant', 'baseline', 'second-stage' or a .safetensors file"
    )
    parser.add_argument("--cache", required=True, help="slice cache of `equicam prepare`")
    parser.add_argument("--out", required=True, type=Path, help="new .safetensors file")
    parser.add_argument(
        "--splits",
        default="val",
        help="comma-separated splits of the cache to calibrate on (default val; a cache made "
        "of validation patients only may use train,val,test)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--bias-correction",
        action="store_true",
        help="the new checkpoint divides each sequence by its fitted bias field before "
        "normalising it, as the cache must then do (equicam prepare --bias-correction); "
        "default: as the checkpoint does",
    )
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    source = resolve_checkpoint(args.checkpoint)
    if args.out.exists() and args.out.resolve() == source.resolve():
        parser.error(f"{args.out}: refusing to overwrite the checkpoint being calibrated")
    names = [s for s in args.splits.split(",") if s]
    unknown = [s for s in names if s not in ("train", "val", "test")]
    if unknown or not names:
        parser.error(f"--splits: use some of train, val, test (got {args.splits!r})")
    if read_metadata(source).get("kind") == SECOND_STAGE:
        calibrate_second_stage(
            parser, source, args.cache, names, args.out, device, args.bias_correction
        )
        return
    model, meta = load_checkpoint(args.checkpoint, device=device)
    if args.bias_correction:
        meta = {**meta, "bias_correction": True}
    data = [SliceCache(args.cache, split, model.modalities) for split in names]
    data[0].check_preprocessing(meta, source)
    chosen = calibrate(model, data, device, refine=True)
    if chosen["fusion_weights"] is None:
        parser.error(f"{args.cache}: its {args.splits} split has no patient with tumour")
    model.fusion_weights = chosen["fusion_weights"]
    meta = {
        **meta,
        **calibration_metadata(chosen),
        "calibrated_on": {
            "cache": str(args.cache),
            "splits": names,
            "val_cases": sum(len(d.case_ids) for d in data),
        },
    }
    path = save_checkpoint(args.out, model.cpu(), meta)
    refined = chosen["refined"]["maps"]
    guided = chosen.get("guided", {}).get("maps", {})
    print(
        f"wrote {path}: fusion weights "
        + " ".join(f"{m} {w:.2f}" for m, w in chosen["fusion_weights"].items())
        + "; val Dice paper / refined / guided "
        + " ".join(
            f"{k} {v['dice']:.3f}/{refined[k]['dice']:.3f}/"
            + (f"{guided[k]['dice']:.3f}" if k in guided else "-")
            for k, v in chosen["maps"].items()
        )
        + f"; default protocol {chosen['protocol']}"
    )


if __name__ == "__main__":
    from equicam.cli import run_module

    sys.exit(run_module("training.calibrate", main))
