"""How hard and how realistic is the synthetic data? Timing, threshold anchor and a montage.

    .venv/bin/python bench/synth_quality.py --cases 10 --seed 0 --family clinical-3T --out docs
    .venv/bin/python bench/synth_quality.py --data data/test_c3t   (cases already written)

Prints the generation time per case and the best Dice that one intensity threshold on one
modality reaches against the whole tumour (each modality z-scored inside the brain per case,
one threshold fixed across all cases, mean Dice over the cases with tumour), that threshold's
Dice by whole-tumour size stratum, plus the per-case-optimal threshold as an upper bound.
Writes ``OUT/synth_montage.png``: four sequences x three axial slices with the tumour outline,
for a high-grade, a low-grade and a tumour-free case, in radiological orientation.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from equicam.core.brats import LAYER_NAMES, MODALITIES, load_case
from equicam.core.preprocess import brain_mask, normalise_volume
from equicam.core.synth import CASE_TYPES, family_names, write_cases

EDGES = np.linspace(-5, 5, 201)
STRATA = ((0.0, 30.0, "< 30 cm3"), (30.0, 100.0, "30-100 cm3"), (100.0, np.inf, "> 100 cm3"))


def dice_curves(case) -> dict[str, np.ndarray]:
    """Per modality: Dice of ``z > t`` and of ``z < t`` for every threshold t in EDGES."""
    brain = brain_mask(case.images)
    tumour = case.whole_tumour[brain]
    curves = {}
    for m in MODALITIES:
        z = normalise_volume(case.images[m], brain)[brain]
        pos, _ = np.histogram(z[tumour], EDGES)
        neg, _ = np.histogram(z[~tumour], EDGES)
        n_pos = tumour.sum()
        # Above threshold EDGES[i]: counts from bin i upwards.
        tp_above = np.cumsum(pos[::-1])[::-1]
        fp_above = np.cumsum(neg[::-1])[::-1]
        tp_below = np.cumsum(pos) - pos
        fp_below = np.cumsum(neg) - neg
        curves[(m, "above")] = 2 * tp_above / (n_pos + tp_above + fp_above)
        curves[(m, "below")] = 2 * tp_below / (n_pos + tp_below + fp_below + 1e-9)
    return curves


def montage(cases, out: Path) -> None:
    """Four sequences x three slices per case, tumour outline in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(cases) * 3
    fig, axes = plt.subplots(rows, 4, figsize=(4 * 2.6, rows * 2.6), facecolor="black")
    for c, (label, case) in enumerate(cases):
        wt = case.whole_tumour
        if wt.any():
            zc = int(np.median(np.flatnonzero(wt.any(axis=(1, 2)))))
        else:
            zc = case.images["t1"].shape[0] // 2
        step = max(1, round(12 / case.spacing[0]))
        for r, z in enumerate((zc - step, zc, zc + step)):
            for col, m in enumerate(MODALITIES):
                ax = axes[c * 3 + r, col]
                image = case.images[m][z]
                inside = case.images[m][case.images[m] > 0]
                ax.imshow(image, cmap="gray", vmin=0, vmax=np.percentile(inside, 99.5))
                if wt[z].any():
                    ax.contour(wt[z], levels=[0.5], colors="red", linewidths=0.7)
                ax.set_axis_off()
                if r == 0:
                    ax.set_title(f"{LAYER_NAMES[m]}", color="white", fontsize=9)
            axes[c * 3 + r, 0].text(2, 12, f"{label} z={z}", color="yellow", fontsize=7, va="top")
    fig.suptitle(
        "Synthetic BraTS-like cases (radiological view: patient right on the left, anterior up)",
        color="white",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(out, dpi=110, facecolor="black")
    plt.close(fig)


def _report(folders: list[Path], out: Path) -> None:
    totals, per_case_best, volumes, shown = {}, [], [], []
    for index, folder in enumerate(folders):
        case = load_case(folder)
        kind = CASE_TYPES[index % len(CASE_TYPES)]
        if kind in ("hgg", "lgg", "healthy") and kind not in [k for k, _ in shown]:
            shown.append((kind, case))
        if not case.whole_tumour.any():
            continue
        volumes.append(case.whole_tumour.sum() * np.prod(case.spacing) / 1000.0)
        curves = dice_curves(case)
        per_case_best.append(max(float(c.max()) for c in curves.values()))
        for key, curve in curves.items():
            totals.setdefault(key, []).append(curve)
    means = {key: np.mean(curves, axis=0) for key, curves in totals.items()}
    key, curve = max(means.items(), key=lambda kv: kv[1].max())
    best = int(curve.argmax())
    print(
        f"best single threshold over {len(per_case_best)} tumour cases: {key[0]} {key[1]} "
        f"z={EDGES[best]:+.2f} -> mean Dice {curve[best]:.3f}"
    )
    at_best = np.array([c[best] for c in totals[key]])
    volumes = np.array(volumes)
    for low, high, label in STRATA:
        inside = (volumes >= low) & (volumes < high)
        if inside.any():
            print(f"  {label:11s} {inside.sum():3d} cases: Dice {at_best[inside].mean():.3f}")
    for m in MODALITIES:
        top = max(means[(m, d)].max() for d in ("above", "below"))
        print(f"  {m:6s} best fixed-threshold mean Dice {top:.3f}")
    print(f"per-case optimal threshold (upper bound): mean Dice {np.mean(per_case_best):.3f}")
    out.mkdir(parents=True, exist_ok=True)
    montage(shown, out / "synth_montage.png")
    print(f"wrote {out / 'synth_montage.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=("full", "small"), default="full")
    parser.add_argument("--family", choices=family_names(), default="train")
    parser.add_argument("--data", type=Path, help="report on cases already written here")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()

    print(f"machine: {platform.node()} {platform.machine()} {platform.processor() or ''}".strip())
    if args.data:
        _report(sorted(p for p in args.data.iterdir() if p.is_dir()), args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folders = write_cases(tmp, args.cases, args.seed, args.size, args.family)
        elapsed = time.perf_counter() - start
        print(f"generated {args.cases} {args.size} cases: {elapsed / args.cases:.1f} s per case")
        size_mb = sum(f.stat().st_size for f in Path(folders[0]).iterdir()) / 1e6
        print(f"one case on disk: {size_mb:.1f} MB")
        _report(folders, args.out)


if __name__ == "__main__":
    main()
