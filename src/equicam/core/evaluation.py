"""The back ends of ``equicam cam`` and ``equicam evaluate``.

``evaluate`` runs on one process, or under ``torchrun --nproc_per_node N``: each rank then
evaluates every N-th case on its own device (``cuda:LOCAL_RANK`` on GPUs) and rank 0 gathers
the scores and writes the reports.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from equicam import __version__
from equicam.core.brats import CaseError, CaseWarning, find_cases, load_case, save_volume
from equicam.core.metrics import assd, dice
from equicam.core.preprocess import brain_mask, normalise_volume
from equicam.core.refine import apply_protocol, check_protocol, default_protocol, refinement_of

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


def cam_case(
    case_path: str | os.PathLike,
    checkpoint: str | os.PathLike = "equivariant",
    out_dir: str | os.PathLike = ".",
    *,
    method: str = "cam",
    device: str = "auto",
    threshold: float | None = None,
    precision: str = "auto",
    protocol: str | None = None,
) -> list[Path]:
    """Write one case's per-modality and fused CAMs and pseudo-masks as NIfTI.

    Parameters
    ----------
    case_path
        A case folder or any one of its files (any BraTS layout).
    checkpoint
        ``equivariant`` or ``baseline`` (bundled) or a ``.safetensors`` file.
    out_dir
        Output folder, created if needed.
    method
        ``cam``, ``gradcam`` or ``gradcampp``.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    threshold
        Mask threshold of every map; default the checkpoint's (see :func:`chosen_thresholds`).
    precision
        ``auto``, ``fp32`` or ``bf16`` (see :func:`~equicam.core.inference.resolve_precision`).
    protocol
        ``paper`` or ``refined`` post-processing (:mod:`equicam.core.refine`); default the
        checkpoint's recommendation.

    Returns
    -------
    list of Path
        ``cam_<name>.nii.gz`` (float32) and ``mask_<name>.nii.gz`` (uint8) for every modality
        the checkpoint and the case share and for ``fused_<fusion>``, in the case's geometry,
        then ``cam.json`` (provenance). A mask file that exists and differs from what this run
        would write, e.g. one a user has corrected, is kept and the new mask is written beside
        it with a numbered name.
    """
    from equicam.core.inference import resolve_precision, run_to_end

    if threshold is not None:
        _check_threshold(threshold)
    model, meta, device, source = _load_model(checkpoint, device)
    protocol = _protocol(meta, protocol, source)
    precision = resolve_precision(precision, device)
    case = load_case(case_path, list(model.modalities))
    out = _make_folder(Path(out_dir))
    result = run_to_end(case_maps(case, model, method=method, device=device, precision=precision))
    maps, masks, settings = apply_protocol(
        result, protocol, meta, case.spacing, threshold, model.fusion_weights
    )
    jobs = [(v, out / f"cam_{name}.nii.gz", "float32") for name, v in maps.items()]
    jobs += [(mask, _mask_path(out, name, mask, case), "uint8") for name, mask in masks.items()]

    def write(job):
        array, path, dtype = job
        return save_volume(array, case.geometry, path, dtype=dtype, protect=case.files.inputs)

    # zlib releases the GIL while it compresses: one file per core at a time.
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        written = list(pool.map(write, jobs))
    provenance = {
        "case": case.case_id,
        "case_folder": str(case.files.folder),
        "checkpoint": str(checkpoint),
        "checkpoint_file": str(source),
        "method": method,
        "protocol": protocol,
        "thresholds": _thresholds_of(settings),
        "protocol_settings": settings,
        "modalities": list(result.maps),
        "device": device,
        "precision": precision,
        "versions": _versions(),
        "files": [p.name for p in written],
    }
    (out / "cam.json").write_text(json.dumps(provenance, indent=2))
    return [*written, out / "cam.json"]


def _protocol(meta: dict, protocol: str | None, source) -> str:
    """The protocol to run: ``protocol`` or the checkpoint's default; refined needs settings."""
    protocol = default_protocol(meta) if protocol is None else check_protocol(protocol)
    if protocol == "refined":
        refinement_of(meta, str(source))
    return protocol


def _thresholds_of(settings: dict) -> dict[str, float]:
    """Map name -> mask threshold of :func:`~equicam.core.refine.apply_protocol`'s settings."""
    if "thresholds" in settings:
        return settings["thresholds"]
    return {name: s["threshold"] for name, s in settings["maps"].items()}


def _make_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CaseError(folder, f"cannot create the output folder ({error.strerror})") from None
    return folder


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
    protocol: str | None = None,
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
    protocol
        ``paper`` or ``refined`` post-processing (:mod:`equicam.core.refine`); default the
        checkpoint's recommendation. The summary scores each map's mask under the protocol;
        the sweep thresholds the protocol's maps without the refined mask steps.
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
        protocol = _protocol(meta, protocol, source)
        precision = resolve_precision(precision, device)
        settings: dict = {}
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
            truth = case.whole_tumour
            maps, masks, settings = apply_protocol(
                result, protocol, meta, case.spacing, threshold, model.fusion_weights
            )
            chosen.update(_thresholds_of(settings))
            rows = {}
            for name, v in maps.items():
                rows[name, None] = {
                    "dice": dice(masks[name], truth),
                    "assd": assd(masks[name], truth, case.spacing),
                }
                for t in sweep:
                    if protocol == "paper" and t == chosen[name]:  # the same mask
                        rows[name, t] = rows[name, None]
                        continue
                    rows[name, t] = {
                        "dice": dice(v >= t, truth),
                        "assd": assd(v >= t, truth, case.spacing),
                    }
            per_case[case.case_id] = {name: rows[name, None] for name in maps}
            for t in sweep:
                swept[t][case.case_id] = {name: rows[name, t] for name in maps}
            log(
                f"{case.case_id} Dice: "
                + ", ".join(f"{k} {s['dice']:.3f}" for k, s in per_case[case.case_id].items())
            )
        if world > 1:
            import torch.distributed as dist

            shards: list = [None] * world
            dist.all_gather_object(shards, (per_case, swept, chosen, settings))
            per_case = {k: v for shard in shards for k, v in shard[0].items()}
            swept = {t: {k: v for shard in shards for k, v in shard[1][t].items()} for t in sweep}
            chosen = {k: v for shard in shards for k, v in shard[2].items()}
            settings = next((shard[3] for shard in shards if shard[3]), settings)
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()

    per_case = dict(sorted(per_case.items()))
    results = {
        "checkpoint": str(checkpoint),
        "checkpoint_file": str(source),
        "method": method,
        "protocol": protocol,
        "protocol_settings": settings,
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
        (out / "results.json").write_text(json.dumps(results, indent=2))
        (out / "results.md").write_text(results_table(results))
        if sweep:
            _plot_sweep(results, out / "dice_vs_threshold.png")
    return results


def results_table(results: dict) -> str:
    """Markdown tables: Dice and ASSD (mean +- std) per map, then mean Dice per threshold."""
    summary, sweep = results["summary"], results["sweep"]
    lines = [
        f"Checkpoint `{results['checkpoint']}`, method `{results['method']}`, "
        f"protocol `{results.get('protocol', 'paper')}`, "
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
