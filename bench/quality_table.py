"""The paper's table on held-out synthetic patients: every variant and CAM method, plus the anchor.

    .venv/bin/python -m bench.quality_table --test data/heldout --val data/synth80 \\
        --cache data/synth80_cache --out docs/results \\
        baseline=runs/cpu_baseline/checkpoint.safetensors er=runs/cpu_er/checkpoint.safetensors \\
        kl=runs/cpu_kl/checkpoint.safetensors er_kl=runs/cpu_er_kl/checkpoint.safetensors \\
        full=runs/cpu_full/checkpoint.safetensors

Each ``NAME=CHECKPOINT`` is evaluated with ``equicam evaluate``'s own function on every case of
``--test`` (the threshold of each map is the one its training chose on validation); the
``baseline`` checkpoint is also evaluated with Grad-CAM and Grad-CAM++. The anchor is the best
single intensity threshold on one modality: each modality z-scored inside the brain per case,
one modality, direction and threshold chosen on the validation patients (the ``val`` split of
``--cache``, read from ``--val``), then applied unchanged to the test patients.

Writes ``OUT/<row>/results.json`` per row, ``OUT/table.md`` (Dice over every patient, ASSD over
the patients with tumour, mean +- std) and ``OUT/cams.png``: baseline against equivariant CAMs
on a few test slices.
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
from equicam.core.metrics import assd, dice
from equicam.core.preprocess import brain_mask, normalise_volume
from equicam.core.scoring import summarise

COLUMNS = (*MODALITIES, "fused_mean", "fused_max", "fused_geometric", "fused_weighted")
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


def anchor_scores(case, anchor: dict) -> dict:
    """Dice and ASSD of the anchor's mask on one case."""
    brain = brain_mask(case.images)
    z = normalise_volume(case.images[anchor["modality"]], brain)
    above = anchor["direction"] == "above"
    mask = brain & ((z >= anchor["z"]) if above else (z < anchor["z"]))
    truth = case.whole_tumour
    return {"dice": dice(mask, truth), "assd": assd(mask, truth, case.spacing)}


def _row(label: str, results: dict, tumour_free: set) -> tuple[str, list[str], list[str]]:
    """Dice over every case; ASSD over the cases with tumour (it has no meaning without)."""
    dices, assds = [], []
    for column in COLUMNS:
        rows = {case: row[column] for case, row in results["per_case"].items() if column in row}
        d = [s["dice"] for s in rows.values()]
        a = [s["assd"] for case, s in rows.items() if case not in tumour_free]
        dices.append(f"{np.mean(d):.3f} +- {np.std(d):.3f}" if d else "")
        assds.append(f"{np.mean(a):.1f} +- {np.std(a):.1f}" if a else "")
    return label, dices, assds


def table(rows: list[tuple[str, list[str], list[str]]], n_cases: int, n_free: int) -> str:
    """Two Markdown tables (Dice, then ASSD in mm) with one row per method."""
    header = "| | " + " | ".join(c.replace("_", " ") for c in COLUMNS) + " |"
    rule = "| --- |" + " --- |" * len(COLUMNS)
    out = [f"Dice, mean +- std over {n_cases} held-out patients", "", header, rule]
    out += [f"| {label} | " + " | ".join(d) + " |" for label, d, _ in rows]
    out += [
        "",
        f"ASSD (mm), mean +- std over the {n_cases - n_free} held-out patients with tumour",
        "",
        header,
        rule,
    ]
    out += [f"| {label} | " + " | ".join(a) + " |" for label, _, a in rows]
    return "\n".join(out) + "\n"


def figure(test_dir: Path, checkpoints: dict, path: Path, n_slices: int = 4) -> None:
    """FLAIR with the tumour outline, then each model's weighted-fusion CAM, on a few slices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from equicam.core.checkpoint import load_checkpoint
    from equicam.core.evaluation import case_maps
    from equicam.core.inference import run_to_end

    models = {name: load_checkpoint(ckpt)[0] for name, ckpt in checkpoints.items()}
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
        for name, model in models.items():
            maps = run_to_end(case_maps(case, model, method="cam", device="cpu"))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=Path, required=True, help="held-out cases")
    parser.add_argument("--val", type=Path, required=True, help="the training cases folder")
    parser.add_argument("--cache", type=Path, required=True, help="slice cache with the splits")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=CHECKPOINT")
    args = parser.parse_args()
    checkpoints = dict(item.split("=", 1) for item in args.checkpoints)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.node()} {platform.machine()}")

    test_cases = [load_case(f) for f in find_cases(args.test) if f.seg is not None]
    tumour_free = {c.case_id for c in test_cases if not c.whole_tumour.any()}
    rows = []
    jobs = [(name, "cam") for name in checkpoints]
    if "baseline" in checkpoints:
        jobs[1:1] = [("baseline", "gradcam"), ("baseline", "gradcampp")]
    n_cases = 0
    for name, method in jobs:
        start = time.perf_counter()
        folder = args.out / f"{name}_{method}"
        results = evaluate(
            args.test,
            checkpoints[name],
            folder,
            method=method,
            device="cpu",
            thresholds=(),
            log=lambda _: None,
        )
        n_cases = len(results["cases"])
        meta = read_metadata(resolve_checkpoint(checkpoints[name]))
        model = meta["model"]
        setting = (
            f"{model['input_size']} px, widths {model['widths'][0]}-{model['widths'][-1]}, "
            f"{meta.get('epochs', '?')} epochs"
        )
        label = f"{name}, {METHOD_LABELS[method]} ({setting})"
        rows.append(_row(label, results, tumour_free))
        print(f"{name} {method}: {time.perf_counter() - start:.0f} s, " + rows[-1][1][-3])

    val_ids = set((args.cache / "splits" / "val.txt").read_text().split())
    val_cases = [load_case(f) for f in find_cases(args.val) if f.case_id in val_ids]
    anchor = choose_anchor(val_cases)
    per_case = {c.case_id: {anchor["modality"]: anchor_scores(c, anchor)} for c in test_cases}
    summary = summarise(per_case, {anchor["modality"]: anchor["z"]})
    anchor_results = {"anchor": anchor, "summary": summary, "per_case": per_case}
    (args.out / "anchor").mkdir(exist_ok=True)
    (args.out / "anchor" / "results.json").write_text(json.dumps(anchor_results, indent=2))
    sign = ">=" if anchor["direction"] == "above" else "<"
    label = f"anchor: z {sign} {anchor['z']:+.2f} on {LAYER_NAMES[anchor['modality']]}"
    rows.append(_row(label, anchor_results, tumour_free))
    print(f"{label} (val Dice {anchor['val_dice']:.3f})")

    text = table(rows, n_cases, len(tumour_free))
    (args.out / "table.md").write_text(text)
    print(text)
    shown = {k: v for k, v in checkpoints.items() if k in ("baseline", "full")}
    if shown:
        figure(args.test, shown, args.out / "cams.png")
        print(f"wrote {args.out / 'cams.png'}")


if __name__ == "__main__":
    main()
