"""The back ends of ``equicam cam`` and ``equicam evaluate``."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from equicam import __version__
from equicam.core.brats import CaseError, CaseWarning, find_cases, load_case, save_volume
from equicam.core.metrics import assd, dice
from equicam.core.preprocess import brain_mask, normalise_volume

SWEEP = tuple(round(t, 2) for t in np.arange(0.2, 0.81, 0.1))
DEFAULT_THRESHOLD = 0.5


def case_maps(case, model, *, method: str, device: str, fusions=("mean", "max")):
    """Normalise a loaded case and return the generator of its maps (see ``cam_volume``)."""
    from equicam.core.inference import cam_volume

    images = {m: case.images[m] for m in model.modalities if m in case.images}
    brain = brain_mask(images)
    normalised = {m: normalise_volume(v, brain) for m, v in images.items()}
    return cam_volume(model, normalised, method=method, device=device, fusions=fusions)


def _load_model(checkpoint, device):
    from equicam.core.checkpoint import load_checkpoint
    from equicam.core.device import resolve_device

    device = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, device=device)
    return model, meta, device


def cam_case(
    case_path: str | os.PathLike,
    checkpoint: str | os.PathLike = "equivariant",
    out_dir: str | os.PathLike = ".",
    *,
    method: str = "cam",
    device: str = "auto",
    threshold: float | None = None,
) -> list[Path]:
    """Write one case's per-modality and fused CAMs and pseudo-masks as NIfTI.

    Files: ``cam_<name>.nii.gz`` (float32) and ``mask_<name>.nii.gz`` (uint8) for every
    modality and ``fused_<fusion>``, in the case's geometry, plus ``cam.json`` (provenance).
    A mask file that exists and differs from what this run would write, e.g. one a user has
    corrected, is kept and the new mask is written beside it with a numbered name.
    """
    from equicam.core.inference import run_to_end

    model, meta, device = _load_model(checkpoint, device)
    case = load_case(case_path, list(model.modalities))
    threshold = float(meta.get("threshold", DEFAULT_THRESHOLD) if threshold is None else threshold)
    result = run_to_end(case_maps(case, model, method=method, device=device))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    protect = case.files.inputs
    written = []
    for name, volume in result.all_maps().items():
        written.append(
            save_volume(
                volume, case.geometry, out / f"cam_{name}.nii.gz", dtype="float32", protect=protect
            )
        )
    for name, mask in result.masks(threshold).items():
        written.append(
            save_volume(
                mask,
                case.geometry,
                _mask_path(out, name, mask, case),
                dtype="uint8",
                protect=protect,
            )
        )
    provenance = {
        "case": case.case_id,
        "checkpoint": str(checkpoint),
        "method": method,
        "threshold": threshold,
        "device": device,
        "equicam": __version__,
        "files": [p.name for p in written],
    }
    (out / "cam.json").write_text(json.dumps(provenance, indent=2))
    return [*written, out / "cam.json"]


def _mask_path(out: Path, name: str, mask: np.ndarray, case) -> Path:
    """``mask_<name>.nii.gz``, unless a different (edited) mask is already there."""
    import nibabel as nib

    path = out / f"mask_{name}.nii.gz"
    number = 1
    while path.exists():
        existing = case.geometry.to_display(np.asarray(nib.load(path).dataobj))
        if existing.shape == mask.shape and np.array_equal(existing > 0, mask > 0):
            return path
        number += 1
        path = out / f"mask_{name}_{number}.nii.gz"
    if number > 1:
        warnings.warn(
            f"{out / f'mask_{name}.nii.gz'} differs from this run's mask and was kept; "
            f"writing {path.name}",
            CaseWarning,
            stacklevel=3,
        )
    return path


def _scores(pred: np.ndarray, truth: np.ndarray, spacing) -> dict:
    return {"dice": dice(pred, truth), "assd": assd(pred, truth, spacing)}


def _summary(per_case: dict, key: str, threshold: float) -> dict:
    names = sorted({name for row in per_case.values() for name in row})
    summary = {}
    for name in names:
        dices = [row[name][key]["dice"] if key else row[name]["dice"] for row in per_case.values()]
        assds = [row[name][key]["assd"] if key else row[name]["assd"] for row in per_case.values()]
        summary[name] = {
            "dice_mean": float(np.mean(dices)),
            "dice_std": float(np.std(dices)),
            "assd_mean": float(np.mean(assds)),
            "assd_std": float(np.std(assds)),
            "threshold": threshold,
        }
    return summary


def evaluate(
    data_dir: str | os.PathLike,
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    method: str = "cam",
    device: str = "auto",
    threshold: float | None = None,
    fusions=("mean", "max", "geometric"),
    log=print,
) -> dict:
    """Dice and ASSD of every case with a segmentation under ``data_dir``.

    Writes ``results.json`` (schema in DESIGN.md, plus ``sweep``: the summary at every
    threshold of :data:`SWEEP`), ``results.md`` and ``dice_vs_threshold.png``.
    """
    from equicam.core.inference import run_to_end

    model, meta, device = _load_model(checkpoint, device)
    threshold = float(meta.get("threshold", DEFAULT_THRESHOLD) if threshold is None else threshold)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_case, sweep_rows = {}, {}
    for files in find_cases(data_dir):
        if files.seg is None:
            warnings.warn(f"{files.case_id}: no segmentation, skipped", CaseWarning, stacklevel=2)
            continue
        case = load_case(files, [m for m in model.modalities if m in files.images])
        result = run_to_end(case_maps(case, model, method=method, device=device, fusions=fusions))
        truth = case.whole_tumour
        maps = result.all_maps()
        per_case[case.case_id] = {
            name: _scores(v >= threshold, truth, case.spacing) for name, v in maps.items()
        }
        sweep_rows[case.case_id] = {
            name: {f"{t:.1f}": _scores(v >= t, truth, case.spacing) for t in SWEEP}
            for name, v in maps.items()
        }
        fused = per_case[case.case_id].get("fused_mean", {}).get("dice", float("nan"))
        log(f"{case.case_id}: fused_mean Dice {fused:.3f}")
    if not per_case:
        raise CaseError(data_dir, "no case with a segmentation to evaluate")
    results = {
        "checkpoint": str(checkpoint),
        "method": method,
        "cases": sorted(per_case),
        "summary": _summary(per_case, "", threshold),
        "per_case": per_case,
        "sweep": {f"{t:.1f}": _summary(sweep_rows, f"{t:.1f}", t) for t in SWEEP},
        "training": {k: meta.get(k) for k in ("variant", "data") if k in meta},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results_table(results))
    _plot_sweep(results, out / "dice_vs_threshold.png")
    return results


def results_table(results: dict) -> str:
    """A Markdown table of the summary: Dice and ASSD, mean +- std, per map."""
    lines = [
        f"Checkpoint `{results['checkpoint']}`, method `{results['method']}`, "
        f"{len(results['cases'])} cases.",
        "",
        "| map | Dice | ASSD (mm) | threshold |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in results["summary"].items():
        lines.append(
            f"| {name} | {row['dice_mean']:.3f} +- {row['dice_std']:.3f} | "
            f"{row['assd_mean']:.1f} +- {row['assd_std']:.1f} | {row['threshold']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _plot_sweep(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    thresholds = sorted(results["sweep"], key=float)
    for name in results["summary"]:
        ax.plot(
            [float(t) for t in thresholds],
            [results["sweep"][t][name]["dice_mean"] for t in thresholds],
            marker="o",
            label=name,
        )
    ax.set_xlabel("threshold")
    ax.set_ylabel("mean Dice")
    ax.set_title(f"{Path(results['checkpoint']).stem} ({results['method']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
