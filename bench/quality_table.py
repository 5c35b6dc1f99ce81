"""The paper's table on a held-out appearance family: every variant and CAM method, the anchor.

    .venv/bin/python -m bench.quality_table --test data/test_c3t --val data/train60 \\
        --cache data/train60_cache --out docs/results \\
        baseline=runs/cpu_baseline/checkpoint.safetensors full=runs/cpu_full/checkpoint.safetensors

``--test`` holds cases of a family no network trained on (``equicam synth --family
clinical-3T``), ``--val``/``--cache`` the training family's cases and their splits. Each
``NAME[@PROTOCOL]=CHECKPOINT`` is evaluated with ``equicam evaluate``'s own function under that
post-processing protocol (default: the checkpoint's; every threshold and setting is the one its
calibration chose on validation); the ``baseline`` checkpoint is also evaluated
with Grad-CAM and Grad-CAM++ (``--no-gradcam`` skips them). The anchor is the best single
intensity threshold on one modality: each modality z-scored inside the brain per case, one
modality, direction and threshold chosen on the validation patients (the ``val`` split of
``--cache``, or the ``--splits`` given, read from ``--val``), then applied unchanged to the
test patients.

Writes ``OUT/<row>/results.json`` per row, ``OUT/table.md``: Dice of every map over the tumour
patients; then, for each row's fused weighted map and its best single sequence, Dice by
whole-tumour size stratum, HD95 and ASSD over the tumour patients and the false-positive
volume on the tumour-free patients; and ``OUT/cams.png``: the CAMs of the rows named
``baseline``, ``equivariant`` and ``full`` (whatever their protocol) on a few test slices.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from bench.synth_quality import EDGES, dice_curves
from equicam.core.brats import LAYER_NAMES, MODALITIES, find_cases, load_case
from equicam.core.checkpoint import read_metadata, resolve_checkpoint
from equicam.core.evaluation import evaluate
from equicam.core.preprocess import brain_mask, normalise_volume
from equicam.core.scoring import STRATA, cohort, score_maps

COLUMNS = (
    *MODALITIES,
    "fused_mean",
    "fused_max",
    "fused_geometric",
    "fused_weighted",
    "second_stage",
)
METHOD_LABELS = {"cam": "CAM", "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++"}


def choose_anchor(val_cases) -> dict:
    """The modality, direction and z threshold with the best mean Dice over ``val_cases``."""
    totals: dict = {}
    for case in val_cases:
        if case.whole_tumour.any():
            for key, curve in dice_curves(case).items():
                totals.setdefault(key, []).append(curve)
    means = {key: np.mean(curves, axis=0) for key, curves in totals.items()}
    (modality, direction), curve = max(means.items(), key=lambda kv: kv[1].max())
    best = int(curve.argmax())
    return {
        "modality": modality,
        "direction": direction,
        "z": float(EDGES[best]),
        "val_dice": float(curve[best]),
    }


def anchor_mask(case, anchor: dict) -> np.ndarray:
    """The anchor's boolean mask on one case: its modality z-scored inside the brain, then
    thresholded (``anchor`` as :func:`choose_anchor` returns it)."""
    brain = brain_mask(case.images)
    z = normalise_volume(case.images[anchor["modality"]], brain)
    above = anchor["direction"] == "above"
    return brain & ((z >= anchor["z"]) if above else (z < anchor["z"]))


def anchor_record(case, anchor: dict) -> dict:
    """The anchor's mask on one case, scored as ``evaluate`` scores a map (named after its
    modality)."""
    name = anchor["modality"]
    mask = anchor_mask(case, anchor)
    record = score_maps(
        {name: mask.astype(np.float32)}, case.whole_tumour, case.spacing, {name: 0.5}
    )
    record["thresholds"] = {name: 0.5}
    return record


def _mean(row: dict, key: str, digits: int) -> str:
    if row.get(f"{key}_mean") is None:
        return "-"
    return f"{row[f'{key}_mean']:.{digits}f} +- {row[f'{key}_std']:.{digits}f}"


def _dice_row(label: str, results: dict) -> str:
    summary = results["summary"]
    return (
        f"| {label} | " + " | ".join(_mean(summary.get(c, {}), "dice", 3) for c in COLUMNS) + " |"
    )


def _detail_row(label: str, results: dict, name: str) -> str:
    """Dice by stratum, HD95, ASSD and false positives of one map of one row."""
    summary, strata = results["summary"].get(name, {}), results["strata"]
    free = results["tumour_free"]["summary"].get(name, {})
    cells = [_mean(summary, "dice", 3)]
    cells += [_mean(strata[s]["summary"].get(name, {}), "dice", 3) for s in STRATA]
    cells += [_mean(summary, "hd95", 1), _mean(summary, "assd", 1)]
    fp = free.get("fp_cm3_median")
    cells.append("-" if fp is None else f"{fp:.1f} (max {free['fp_cm3_max']:.1f})")
    return f"| {label} | {name.replace('_', ' ')} | " + " | ".join(cells) + " |"


def best_sequence(results: dict) -> str:
    """The single sequence with the highest Dice over the tumour patients (picked on test)."""
    summary = results["summary"]
    return max(MODALITIES, key=lambda m: summary.get(m, {}).get("dice_mean", -1.0))


def table(rows: list[tuple[str, dict]]) -> str:
    """Markdown: Dice of every map, then the detail of each row's fused and best maps."""
    first = rows[0][1]
    n_tumour, n_free = len(first["tumour_patients"]), len(first["tumour_free"]["cases"])
    counts = ", ".join(f"{s}: {len(first['strata'][s]['cases'])}" for s in STRATA)
    header = "| | " + " | ".join(c.replace("_", " ") for c in COLUMNS) + " |"
    out = [
        f"Dice, mean +- std over {n_tumour} tumour patients",
        "",
        header,
        "| --- |" + " --- |" * len(COLUMNS),
    ]
    out += [_dice_row(label, results) for label, results in rows]
    out += [
        "",
        f"By whole-tumour size ({counts}); HD95 and ASSD (mm) over the tumour patients; "
        f"false-positive volume (cm3, median and max) on the {n_free} tumour-free patients",
        "",
        "| | map | Dice | " + " | ".join(STRATA) + " | HD95 | ASSD | FP cm3 |",
        "| --- | --- |" + " --- |" * (len(STRATA) + 4),
    ]
    for label, results in rows:
        main_maps = ("fused_weighted", "second_stage", best_sequence(results))
        names = [n for n in main_maps if n in results["summary"]]
        out += [_detail_row(label, results, name) for name in names]
    return "\n".join(out) + "\n"


def figure(test_dir: Path, checkpoints: dict, path: Path, n_slices: int = 4) -> None:
    """FLAIR with the tumour outline, then each model's weighted-fusion CAM, on a few slices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from equicam.core.checkpoint import load_checkpoint
    from equicam.core.evaluation import bias_correction_of, case_maps
    from equicam.core.inference import run_to_end

    models = {name: load_checkpoint(ckpt) for name, ckpt in checkpoints.items()}
    cases = [load_case(f) for f in find_cases(test_dir)]
    cases = [c for c in cases if c.whole_tumour.any()][:n_slices]
    fig, axes = plt.subplots(
        len(cases), 1 + len(models), figsize=(2.6 * (1 + len(models)), 2.6 * len(cases))
    )
    fig.patch.set_facecolor("black")
    for r, case in enumerate(cases):
        truth = case.whole_tumour
        z = int(np.argmax(truth.sum(axis=(1, 2))))
        flair = case.images["flair"][z]
        vmax = np.percentile(flair[flair > 0], 99.5)
        panels = [("FLAIR, tumour outline", None)]
        for name, (model, meta) in models.items():
            correct = bias_correction_of(meta)
            maps = run_to_end(
                case_maps(case, model, method="cam", device="cpu", bias_correction=correct)
            )
            panels.append((f"{name}: fused weighted CAM", maps.fused["weighted"][z]))
        for c, (title, cam) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(flair, cmap="gray", vmin=0, vmax=vmax)
            if cam is not None:
                shown = np.ma.masked_less_equal(cam, 0)
                ax.imshow(shown, cmap="inferno", vmin=0, vmax=1, alpha=0.6)
            ax.contour(truth[z], levels=[0.5], colors="lime", linewidths=0.8)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(title, color="white", fontsize=9)
        axes[r, 0].text(2, 10, f"{case.case_id} z={z}", color="yellow", fontsize=7, va="top")
    fig.tight_layout()
    fig.savefig(path, dpi=110, facecolor="black")
    plt.close(fig)


def row_label(name: str, method: str, results: dict) -> str:
    """A row's name with how its networks were made: a CAM model's size, widths, epochs and
    protocol; a second stage's size, widths, the pseudo-masks it learnt, the corrected cases
    it was fine-tuned on and the sizes it runs at."""
    meta = read_metadata(resolve_checkpoint(results["checkpoint"]))
    model = meta["model"]
    size = f"{model['input_size']} px, widths {model['widths'][0]}-{model['widths'][-1]}"
    if results.get("model_kind") == "segnet":
        learnt = meta.get("trained_on", {})
        source = f"{learnt.get('protocol', 'refined')} {learnt.get('map', '?')} pseudo-masks"
        source += f", augment {learnt.get('augment', 0)}"
        if learnt.get("slice_labels"):
            source += ", slice labels"
        if learnt.get("slice_loss"):
            source += f", slice loss {learnt['slice_loss']}"
        tuned = meta.get("fine_tuned")
        if tuned:
            source += f", fine-tuned on {len(tuned['cases'])} corrected cases"
        sizes = meta.get("input_sizes", [model["input_size"]])
        run = f"; run at {'+'.join(map(str, sizes))} px" if len(sizes) > 1 else ""
        return f"{name}, second stage ({size}, {learnt.get('steps', '?')} steps on {source}{run})"
    epochs = meta.get("epochs", "?")
    setting = f"{size}, {epochs} epoch{'' if epochs == 1 else 's'}, {results['protocol']} protocol"
    return f"{name}, {METHOD_LABELS[method]} ({setting})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=Path, required=True, help="held-out cases")
    parser.add_argument("--val", type=Path, required=True, help="the training cases folder")
    parser.add_argument("--cache", type=Path, required=True, help="slice cache with the splits")
    parser.add_argument(
        "--splits",
        default="val",
        help="comma-separated splits of --cache whose patients choose the anchor (default val; "
        "train,val,test for a cache of validation patients only)",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--no-gradcam", action="store_true", help="CAM rows only")
    parser.add_argument("--workers", type=int, default=1, help="cases evaluated at once")
    parser.add_argument(
        "--resume", action="store_true", help="reuse the cases each row's folder already holds"
    )
    parser.add_argument("checkpoints", nargs="+", metavar="NAME[@PROTOCOL]=CHECKPOINT")
    args = parser.parse_args()
    checkpoints, protocols = {}, {}
    for item in args.checkpoints:
        key, path = item.split("=", 1)
        protocols[key] = key.partition("@")[2]
        checkpoints[key] = path
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.node()} {platform.machine()}")

    rows = []
    jobs = [(name, "cam") for name in checkpoints]
    if "baseline" in checkpoints and not args.no_gradcam:
        jobs[1:1] = [("baseline", "gradcam"), ("baseline", "gradcampp")]
    for name, method in jobs:
        start = time.perf_counter()
        folder = args.out / f"{name.replace('@', '_')}_{method}"
        results = evaluate(
            args.test,
            checkpoints[name],
            folder,
            method=method,
            device="cpu",
            thresholds=(),
            workers=args.workers,
            resume=args.resume,
            log=lambda _: None,
            protocol=protocols[name] or None,
        )
        rows.append((row_label(name, method, results), results))
        summary = results["summary"]
        score = summary.get("fused_weighted", summary.get("second_stage", {})).get("dice_mean")
        print(f"{name} {method}: {time.perf_counter() - start:.0f} s, Dice {score:.3f}")

    val_ids = set()
    for split in args.splits.split(","):
        val_ids |= set((args.cache / "splits" / f"{split}.txt").read_text().split())
    val_cases = [load_case(f) for f in find_cases(args.val) if f.case_id in val_ids]
    anchor = choose_anchor(val_cases)
    records = {}
    for folder in find_cases(args.test):
        if folder.seg is not None:
            case = load_case(folder)
            records[case.case_id] = anchor_record(case, anchor)
    anchor_results = {"anchor": anchor, **cohort(records, ())}
    (args.out / "anchor").mkdir(exist_ok=True)
    (args.out / "anchor" / "results.json").write_text(json.dumps(anchor_results, indent=2))
    sign = ">=" if anchor["direction"] == "above" else "<"
    label = f"anchor: z {sign} {anchor['z']:+.2f} on {LAYER_NAMES[anchor['modality']]}"
    rows.append((label, anchor_results))
    print(f"{label} (val Dice {anchor['val_dice']:.3f})")

    text = table(rows)
    (args.out / "table.md").write_text(text)
    print(text)
    shown: dict = {}
    for key, checkpoint in checkpoints.items():
        name = key.partition("@")[0]
        if name in ("baseline", "equivariant", "full"):
            shown.setdefault(name, checkpoint)
    if shown:
        figure(args.test, shown, args.out / "cams.png")
        print(f"wrote {args.out / 'cams.png'}")


if __name__ == "__main__":
    main()
