"""The same slices through each stage of the masks: CAM protocols, second stage, anchor.

    .venv/bin/python -m bench.stages_figure --test data/test_c3t \\
        --anchor docs/results/retrained/anchor/results.json --out docs/results/stages.png \\
        paper@paper=equivariant refined@refined=equivariant guided@guided=equivariant \\
        "second stage=second-stage"

One row per case: the first tumour patient (by case id) of each whole-tumour size stratum
(< 30, 30-100, > 100 cm3) and the first tumour-free patient, leaving out the ids given to
``--skip`` (the cases a fine-tuned column learnt from), so that nobody picks the flattering
ones. Each row shows the axial slice with the most tumour (the tumour-free patient's middle
slice): FLAIR with the ground truth outlined, then each ``NAME[@PROTOCOL]=CHECKPOINT`` mask
(in red; its protocol as ``equicam evaluate`` runs it, the checkpoint's default without one),
then the anchor of ``bench.quality_table`` (its choice read from the anchor row's
``results.json``). Each panel gives the mask's Dice over the whole volume, or on the
tumour-free patient its volume in cm3.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.quality_table import anchor_mask
from equicam.core.brats import LAYER_NAMES, find_cases, load_case
from equicam.core.scoring import STRATA, stratum


def pick_cases(test_dir: Path, skip: set[str]) -> list:
    """The first tumour patient of each size stratum and the first tumour-free one."""
    wanted: dict[str, object] = {}
    for files in find_cases(test_dir):
        if files.seg is None or files.case_id in skip:
            continue
        case = load_case(files)
        cm3 = case.whole_tumour.sum() * float(np.prod(case.spacing)) / 1000.0
        wanted.setdefault(stratum(cm3) if cm3 > 0 else "free", case)
    return [wanted[k] for k in (*STRATA, "free") if k in wanted]


def case_masks(case, columns: dict) -> list[np.ndarray]:
    """Each column's mask on one case, as ``equicam evaluate`` makes it: a CAM model's
    weighted fusion under the column's protocol, a second stage's own mask. Each model runs
    once per case, whatever the number of its columns."""
    from equicam.core.checkpoint import SECOND_STAGE, load_model
    from equicam.core.evaluation import bias_correction_of, normalised_images
    from equicam.core.inference import model_maps, run_to_end
    from equicam.core.refine import THRESHOLD_ONLY, apply_protocol, default_protocol

    runs: dict = {}
    masks = []
    for checkpoint, protocol in columns.values():
        if checkpoint not in runs:
            model, meta = load_model(checkpoint)
            images = normalised_images(case, model.modalities, bias_correction_of(meta))
            maps = model_maps(model, images, method="cam", device="cpu", fusions=["weighted"])
            runs[checkpoint] = (model, meta, images, run_to_end(maps))
        model, meta, images, result = runs[checkpoint]
        if meta.get("kind") == SECOND_STAGE:
            protocol, name = THRESHOLD_ONLY, "second_stage"
        else:
            protocol, name = protocol or default_protocol(meta), "fused_weighted"
        _, made, _ = apply_protocol(
            result, protocol, meta, case.spacing, None, model.fusion_weights, images
        )
        masks.append(made[name].astype(bool))
    return masks


def caption(mask: np.ndarray, case) -> str:
    truth = case.whole_tumour
    if not truth.any():
        return f"{mask.sum() * float(np.prod(case.spacing)) / 1000.0:.1f} cm3"
    dice = 2 * (mask & truth).sum() / max(mask.sum() + truth.sum(), 1)
    return f"Dice {dice:.2f}"


def figure(cases, columns: dict, anchor: dict, path: Path) -> None:
    """Draw the rows of ``cases`` through each column's mask and the anchor into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = ["FLAIR, tumour outlined", *columns, f"anchor: {LAYER_NAMES[anchor['modality']]}"]
    fig, axes = plt.subplots(
        len(cases), len(titles), figsize=(2.3 * len(titles), 2.5 * len(cases)), squeeze=False
    )
    fig.patch.set_facecolor("black")
    for r, case in enumerate(cases):
        truth = case.whole_tumour
        z = int(np.argmax(truth.sum(axis=(1, 2)))) if truth.any() else truth.shape[0] // 2
        masks = [None, *case_masks(case, columns)]
        masks.append(anchor_mask(case, anchor))
        flair = case.images["flair"][z]
        vmax = np.percentile(flair[flair > 0], 99.5)
        cm3 = truth.sum() * float(np.prod(case.spacing)) / 1000.0
        for c, mask in enumerate(masks):
            ax = axes[r, c]
            ax.imshow(flair, cmap="gray", vmin=0, vmax=vmax)
            if mask is not None:
                ax.imshow(np.ma.masked_equal(mask[z], 0), cmap="autumn", alpha=0.45)
                ax.text(2, 10, caption(mask, case), color="yellow", fontsize=7, va="top")
            else:
                size = f"{cm3:.0f} cm3" if truth.any() else "no tumour"
                ax.text(2, 10, f"{case.case_id}, {size}", color="yellow", fontsize=7, va="top")
            if truth[z].any():
                ax.contour(truth[z], levels=[0.5], colors="lime", linewidths=0.7)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(titles[c], color="white", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, facecolor="black")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=Path, required=True, help="held-out cases")
    parser.add_argument(
        "--anchor", type=Path, required=True, help="results.json of bench.quality_table's anchor"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/results/stages.png"))
    parser.add_argument("--skip", default="", help="case ids not to show, comma-separated")
    parser.add_argument("columns", nargs="+", metavar="NAME[@PROTOCOL]=CHECKPOINT")
    args = parser.parse_args()
    columns = {}
    for item in args.columns:
        key, checkpoint = item.split("=", 1)
        name, _, protocol = key.partition("@")
        columns[name] = (checkpoint, protocol or None)
    anchor = json.loads(args.anchor.read_text())["anchor"]
    cases = pick_cases(args.test, set(filter(None, args.skip.split(","))))
    figure(cases, columns, anchor, args.out)
    print(f"wrote {args.out}: {', '.join(c.case_id for c in cases)}")


if __name__ == "__main__":
    main()
