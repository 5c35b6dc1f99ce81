"""The back end of ``equicam evaluate`` (and what ``equicam cam`` shares with it).

``evaluate`` runs on one process, or under ``torchrun --nproc_per_node N``: each rank then
evaluates every N-th case on its own device (``cuda:LOCAL_RANK`` on GPUs) and rank 0 gathers
the scores and writes the reports.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from equicam import __version__
from equicam.core.atomic import write_file, write_json
from equicam.core.brats import CaseError, CaseWarning, find_cases, load_case
from equicam.core.metrics import assd, dice
from equicam.core.preprocess import brain_mask, normalise_volume

SWEEP = tuple(round(t, 2) for t in np.arange(0.2, 0.81, 0.1))
DEFAULT_THRESHOLD = 0.5


def case_maps(
    case,
    model,
    *,
    method: str,
    device: str,
    fusions=("mean", "max", "weighted"),
    precision: str = "auto",
):
    """Normalise a loaded case and return the generator of its maps (see ``cam_volume``)."""
    from equicam.core.inference import cam_volume

    images = {m: case.images[m] for m in model.modalities if m in case.images}
    brain = brain_mask(images)
    normalised = {m: normalise_volume(v, brain) for m, v in images.items()}
    return cam_volume(
        model, normalised, method=method, device=device, fusions=fusions, precision=precision
    )


def _versions() -> dict:
    import nibabel
    import torch

    return {
        "equicam": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "nibabel": nibabel.__version__,
    }


def _load_model(checkpoint, device: str, local_rank: int = 0):
    from equicam.core.checkpoint import load_checkpoint, resolve_checkpoint
    from equicam.core.device import available_devices, resolve_device

    if device in ("auto", "cuda") and local_rank:
        gpus = available_devices()[1:]
        device = gpus[local_rank % len(gpus)] if gpus else "cpu"
    device = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, device=device)
    return model, meta, device, resolve_checkpoint(checkpoint)


def _check_threshold(value: float) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"threshold must lie strictly between 0 and 1, got {value}")
    return value


def chosen_thresholds(meta: dict, threshold: float | None, names) -> dict[str, float]:
    """The mask threshold of each map name.

    ``threshold`` when given; otherwise the checkpoint's own choice on validation: its
    per-map ``thresholds`` where it has one, else its single ``threshold``, else 0.5.
    """
    if threshold is not None:
        return {name: _check_threshold(threshold) for name in names}
    per_map = meta.get("thresholds") or {}
    default = meta.get("threshold", DEFAULT_THRESHOLD)
    return {name: _check_threshold(per_map.get(name, default)) for name in names}


def _make_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CaseError(folder, f"cannot create the output folder ({error.strerror})") from None
    return folder


def summarise(rows: dict[str, dict[str, dict]], thresholds: dict[str, float]) -> dict:
    """Mean and std over cases of each map's scores; ``rows``: case -> map -> scores."""
    names = list(dict.fromkeys(name for row in rows.values() for name in row))
    summary = {}
    for name in names:
        scores = [row[name] for row in rows.values() if name in row]
        dices = [s["dice"] for s in scores]
        assds = [s["assd"] for s in scores]
        summary[name] = {
            "dice_mean": float(np.mean(dices)),
            "dice_std": float(np.std(dices)),
            "assd_mean": float(np.mean(assds)),
            "assd_std": float(np.std(assds)),
            "threshold": thresholds[name],
            "n_cases": len(scores),
        }
    return summary


def _distributed() -> tuple[int, int, int, bool]:
    """``(rank, world, local_rank, joined)`` under torchrun; ``(0, 1, 0, False)`` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0, False
    import torch.distributed as dist

    joined = not dist.is_initialized()
    if joined:
        # Only Python objects (scores) travel between ranks, so gloo serves CPU and GPU runs.
        dist.init_process_group("gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")), joined


def evaluate(
    data_dir: str | os.PathLike,
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    method: str = "cam",
    device: str = "auto",
    threshold: float | None = None,
    thresholds: Sequence[float] = SWEEP,
    fusions: Sequence[str] = ("mean", "max", "geometric", "weighted"),
    precision: str = "auto",
    log: Callable[[str], None] = print,
) -> dict:
    """Dice and ASSD of every case with a segmentation under ``data_dir``.

    Parameters
    ----------
    data_dir
        Folder of cases in any BraTS layout; cases without a segmentation are skipped with a
        :class:`CaseWarning`.
    checkpoint
        ``equivariant`` or ``baseline`` (bundled) or a ``.safetensors`` file.
    out_dir
        Output folder (rank 0 writes it).
    method
        ``cam``, ``gradcam`` or ``gradcampp``.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; under torchrun ``auto``/``cuda`` mean the
        rank's own GPU.
    threshold
        Threshold of every map in the summary; default the checkpoint's choice on validation
        (see :func:`chosen_thresholds`).
    thresholds
        The sweep: every map is also scored at each of these (none: no sweep, no figure;
        ASSD at each level is most of the time of an evaluation).
    fusions
        Fusions evaluated as ``fused_<name>`` maps.
    precision
        ``auto``, ``fp32`` or ``bf16`` (see :func:`~equicam.core.inference.resolve_precision`).
    log
        Receives one line per case.

    Returns
    -------
    dict
        The content of ``results.json``: ``checkpoint``, ``method``, ``cases``, ``summary``
        (map -> dice_mean, dice_std, assd_mean, assd_std, threshold, n_cases), ``per_case``
        (case -> map -> dice, assd), ``sweep`` (threshold -> summary), plus provenance. Also
        writes ``results.md`` and ``dice_vs_threshold.png``.
    """
    from equicam.core.inference import resolve_precision, run_to_end

    if threshold is not None:
        _check_threshold(threshold)
    sweep = [float(t) for t in thresholds]
    out = Path(out_dir)
    rank, world, local_rank, joined = _distributed()
    try:
        if rank == 0:  # an unwritable folder is found before the long part, not after
            _make_folder(out)
        model, meta, device, source = _load_model(checkpoint, device, local_rank)
        precision = resolve_precision(precision, device)
        labelled = []
        for files in find_cases(data_dir):
            if files.seg is not None:
                labelled.append(files)
            elif rank == 0:
                warnings.warn(
                    f"{files.folder}: case {files.case_id} has no segmentation, skipped",
                    CaseWarning,
                    stacklevel=2,
                )
        if not labelled:
            raise CaseError(data_dir, "no case with a segmentation to evaluate")
        # case -> map -> scores at the map's own threshold; threshold -> the same at each level
        per_case: dict[str, dict] = {}
        swept: dict[float, dict[str, dict]] = {t: {} for t in sweep}
        chosen: dict[str, float] = {}
        for files in labelled[rank::world]:
            case = load_case(files, [m for m in model.modalities if m in files.images])
            result = run_to_end(
                case_maps(
                    case, model, method=method, device=device, fusions=fusions, precision=precision
                )
            )
            truth, maps = case.whole_tumour, result.all_maps()
            chosen.update(chosen_thresholds(meta, threshold, maps))
            rows = {}
            for name, v in maps.items():
                for t in {chosen[name], *sweep}:
                    rows[name, t] = {
                        "dice": dice(v >= t, truth),
                        "assd": assd(v >= t, truth, case.spacing),
                    }
            per_case[case.case_id] = {name: rows[name, chosen[name]] for name in maps}
            for t in sweep:
                swept[t][case.case_id] = {name: rows[name, t] for name in maps}
            log(
                f"{case.case_id} Dice: "
                + ", ".join(f"{k} {s['dice']:.3f}" for k, s in per_case[case.case_id].items())
            )
        if world > 1:
            import torch.distributed as dist

            shards: list = [None] * world
            dist.all_gather_object(shards, (per_case, swept, chosen))
            per_case = {k: v for shard in shards for k, v in shard[0].items()}
            swept = {t: {k: v for shard in shards for k, v in shard[1][t].items()} for t in sweep}
            chosen = {k: v for shard in shards for k, v in shard[2].items()}
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()

    per_case = dict(sorted(per_case.items()))
    results = {
        "checkpoint": str(checkpoint),
        "checkpoint_file": str(source),
        "method": method,
        "cases": list(per_case),
        "summary": summarise(per_case, chosen),
        "per_case": per_case,
        "sweep": {
            f"{t:g}": summarise(dict(sorted(swept[t].items())), dict.fromkeys(chosen, t))
            for t in sweep
        },
        "training": {k: meta[k] for k in ("variant", "data") if k in meta},
        "ranks": world,
        "precision": precision,
        "versions": _versions(),
    }
    if rank == 0:
        write_json(out / "results.json", results, replace=True)
        write_file(out / "results.md", results_table(results), replace=True)
        if sweep:
            _plot_sweep(results, out / "dice_vs_threshold.png")
    return results


def results_table(results: dict) -> str:
    """Markdown tables: Dice and ASSD (mean +- std) per map, then mean Dice per threshold."""
    summary, sweep = results["summary"], results["sweep"]
    lines = [
        f"Checkpoint `{results['checkpoint']}`, method `{results['method']}`, "
        f"{len(results['cases'])} cases.",
        "",
        "| map | Dice | ASSD (mm) | threshold |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in summary.items():
        lines.append(
            f"| {name} | {row['dice_mean']:.3f} +- {row['dice_std']:.3f} | "
            f"{row['assd_mean']:.1f} +- {row['assd_std']:.1f} | {row['threshold']:.2f} |"
        )
    if not sweep:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "Mean Dice per threshold:",
        "",
        "| map | " + " | ".join(sweep) + " |",
        "| --- |" + " --- |" * len(sweep),
    ]
    for name in summary:
        cells = [f"{sweep[t][name]['dice_mean']:.3f}" for t in sweep]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot_sweep(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    thresholds = list(results["sweep"])
    for name in results["summary"]:
        ax.plot(
            [float(t) for t in thresholds],
            [results["sweep"][t][name]["dice_mean"] for t in thresholds],
            marker="o",
            label=name,
        )
    ax.set_xlabel("threshold")
    ax.set_ylabel("mean Dice")
    ax.set_ylim(0, 1)
    ax.set_title(f"{Path(results['checkpoint']).stem} ({results['method']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
