"""The back end of ``equicam evaluate`` (and what ``equicam cam`` shares with it).

``evaluate`` runs on one process, or under ``torchrun --nproc_per_node N``: each rank then
evaluates every N-th case on its own device (``cuda:LOCAL_RANK`` on GPUs) and rank 0 gathers
the scores and writes the reports. Within a process, ``workers`` cases run at once, each in
its own worker process (:mod:`concurrent.futures` with ``spawn``), one case per worker at a
time, so that memory stays at about ``workers`` times that of one case.

Each finished case is kept at once in ``OUT_DIR/cases/<case>.json``; a bad case (unreadable
file, wrong geometry, anything that stops it) is reported, listed under ``failed`` with its
reason, and the run goes on. ``resume`` reuses the kept cases made with the same settings.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from equicam import __version__
from equicam.core.atomic import write_file, write_json
from equicam.core.brats import CaseError, CaseWarning, find_cases, load_case
from equicam.core.preprocess import BIAS_DEGREE, normalise_images
from equicam.core.refine import (
    THRESHOLD_ONLY,
    apply_protocol,
    check_protocol,
    default_protocol,
    refinement_of,
)
from equicam.core.scoring import cohort, plot_sweep, results_table, score_maps

SWEEP = tuple(round(t, 2) for t in np.arange(0.2, 0.81, 0.1))
DEFAULT_THRESHOLD = 0.5
CAM_FUSIONS = ("mean", "max", "weighted")  # what `equicam cam` writes (evaluate adds geometric)


def case_maps(
    case,
    model,
    *,
    method: str,
    device: str,
    fusions=CAM_FUSIONS,
    precision: str = "auto",
    bias_correction: bool = False,
):
    """Normalise a loaded case (:func:`normalised_images`) and return the generator of its
    maps (see ``model_maps``)."""
    from equicam.core.inference import model_maps

    return model_maps(
        model,
        normalised_images(case, model.modalities, bias_correction),
        method=method,
        device=device,
        fusions=fusions,
        precision=precision,
    )


def normalised_images(case, modalities, bias_correction: bool = False) -> dict:
    """Modality -> the case's volume normalised as the networks see it (for ``modalities``),
    with ``bias_correction`` each divided by its fitted bias field (degree
    :data:`~equicam.core.preprocess.BIAS_DEGREE`) first."""
    images = {m: case.images[m] for m in modalities if m in case.images}
    return normalise_images(images, BIAS_DEGREE if bias_correction else 0)


def bias_correction_of(meta: dict, asked: bool | None = None) -> bool:
    """Whether inference corrects the bias field: as ``asked``, or, when None, as the
    checkpoint's data were prepared (its ``bias_correction``; false when it does not say)."""
    return meta.get("bias_correction", False) if asked is None else asked


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
    from equicam.core.checkpoint import load_model, resolve_checkpoint
    from equicam.core.device import available_devices, resolve_device

    if device in ("auto", "cuda") and local_rank:
        gpus = available_devices()[1:]
        device = gpus[local_rank % len(gpus)] if gpus else "cpu"
    device = resolve_device(device)
    model, meta = load_model(checkpoint, device=device)
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


def _protocol(meta: dict, protocol: str | None, source, method: str) -> tuple[str, str]:
    """The protocol and method to run: ``protocol`` or the checkpoint's default (refined needs
    settings); a second stage's are :data:`~equicam.core.refine.THRESHOLD_ONLY` and
    ``segnet``."""
    from equicam.core.checkpoint import SECOND_STAGE

    if meta.get("kind") == SECOND_STAGE:
        if protocol is not None or method != "cam":
            raise ValueError(
                f"{source} is a second stage: its mask is its probability at its threshold; "
                "it takes no --protocol and no --method"
            )
        return THRESHOLD_ONLY, SECOND_STAGE
    protocol = default_protocol(meta) if protocol is None else check_protocol(protocol)
    if protocol != "paper":
        refinement_of(meta, str(source), protocol)
    return protocol, method


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


def _score_case(files, model, meta, device: str, settings: dict) -> dict:
    """The record of one case (see :func:`~equicam.core.scoring.score_maps`), or
    ``{"case", "failed"}`` with the reason when anything stops it."""
    from equicam.core.inference import model_maps, run_to_end

    try:
        case = load_case(files, [m for m in model.modalities if m in files.images])
        images = normalised_images(case, model.modalities, settings["bias_correction"])
        result = run_to_end(
            model_maps(
                model,
                images,
                method=settings["method"],
                device=device,
                fusions=settings["fusions"],
                precision=settings["precision"],
            )
        )
        maps, masks, used = apply_protocol(
            result,
            settings["protocol"],
            meta,
            case.spacing,
            settings["threshold"],
            model.fusion_weights,
            images,
        )
        thresholds = _thresholds_of(used)
        record = score_maps(maps, case.whole_tumour, case.spacing, thresholds, settings["sweep"])
        if settings["protocol"] in ("refined", "guided"):  # a mask is more than a threshold
            binary = {name: mask.astype(np.float32) for name, mask in masks.items()}
            at_masks = score_maps(
                binary, case.whole_tumour, case.spacing, dict.fromkeys(masks, 0.5)
            )
            record["scores"] = at_masks["scores"]
        record["protocol_settings"] = used
    # A bad file, a wrong geometry, a case too big for memory: reported, and the cohort goes on.
    except (CaseError, OSError, ValueError, RuntimeError, MemoryError) as error:
        return {"case": files.case_id, "failed": f"{type(error).__name__}: {error}"}
    return {"case": files.case_id, "settings": settings, "thresholds": thresholds, **record}


_WORKER: dict = {}  # the model of a worker process, loaded once by _start_worker


def _start_worker(checkpoint, device: str, local_rank: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER["model"] = _load_model(checkpoint, device, local_rank)[:3]


def _worker_case(files, settings: dict) -> dict:
    model, meta, device = _WORKER["model"]
    return _score_case(files, model, meta, device, settings)


def _kept_record(path: Path, settings: dict) -> dict | None:
    """A case's record from an earlier run with the same settings, None if there is none."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        warnings.warn(
            f"{path}: unreadable ({error}); the case is evaluated again", CaseWarning, stacklevel=3
        )
        return None
    if record.get("settings") != settings:
        raise CaseError(
            path,
            "was written with other settings (checkpoint or its content, method, precision, "
            "thresholds or fusions); rerun without --resume or with another output folder",
        )
    return record


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
    workers: int = 1,
    resume: bool = False,
    protocol: str | None = None,
    bias_correction: bool | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Dice, ASSD and HD95 of every case with a segmentation under ``data_dir``.

    Parameters
    ----------
    data_dir
        Folder of cases in any BraTS layout; cases without a segmentation are skipped with a
        :class:`CaseWarning`.
    checkpoint
        ``equivariant`` or ``baseline`` (bundled) or a ``.safetensors`` file: CAM networks or
        a second stage (:mod:`equicam.core.segnet`, told by its metadata), whose one map is
        ``second_stage``, its protocol ``threshold`` and its method ``segnet``.
    out_dir
        Output folder (rank 0 writes the reports; every rank keeps its cases in ``cases/``).
    method
        ``cam``, ``gradcam`` or ``gradcampp``.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; under torchrun ``auto``/``cuda`` mean the
        rank's own GPU.
    threshold
        Threshold of every map in the summary; default the checkpoint's choice on validation
        (see :func:`chosen_thresholds`).
    thresholds
        The sweep: every map is also scored at each of these (none: no sweep, no figure).
    fusions
        Fusions evaluated as ``fused_<name>`` maps.
    precision
        ``auto``, ``fp32`` or ``bf16`` (see :func:`~equicam.core.inference.resolve_precision`).
    workers
        Cases evaluated at once, each in its own process with ``cores // workers`` threads;
        the scores are those of one worker. Memory grows with it (about 1 GB per worker on
        a full-size case).
    resume
        Reuse the cases kept in ``out_dir/cases`` by an earlier run with the same settings
        (one with other settings is an error); failed cases are tried again.
    protocol
        ``paper`` or ``refined`` post-processing (:mod:`equicam.core.refine`); default the
        checkpoint's recommendation. Each map's scores are those of its mask under the
        protocol; the sweep thresholds the protocol's maps without the refined mask steps.
    bias_correction
        Divide each sequence by its fitted bias field before normalising it
        (:func:`~equicam.core.preprocess.bias_field`); None, the default: as the checkpoint
        says (:func:`bias_correction_of`).
    log
        Receives one line per case.

    Returns
    -------
    dict
        The content of ``results.json``: ``checkpoint``, ``method``, ``cases``, ``summary``
        (map -> dice, assd, hd95 and fp_cm3 means and stds over the tumour patients,
        threshold, n_cases), ``per_case`` (case -> map -> dice, assd, hd95, fp_cm3),
        ``sweep`` (threshold -> summary), ``tumour_patients``, ``tumour_cm3``, ``strata``,
        ``tumour_free`` (see :func:`~equicam.core.scoring.cohort`), ``failed`` (case ->
        reason), plus provenance. Also writes ``results.md`` and ``dice_vs_threshold.png``.
    """
    from equicam.core.cam_output import sha256  # cam_output imports this module
    from equicam.core.inference import resolve_precision

    if threshold is not None:
        _check_threshold(threshold)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    sweep = [_check_threshold(t) for t in thresholds]
    out = Path(out_dir)
    rank, world, local_rank, joined = _distributed()
    try:
        model, meta, device, source = _load_model(checkpoint, device, local_rank)
        protocol, method = _protocol(meta, protocol, source, method)
        precision = resolve_precision(precision, device)
        bias_correction = bias_correction_of(meta, bias_correction)
        settings = {
            "checkpoint_file": str(source),
            # the content, not only the name: a checkpoint retrained to the same path is another
            "checkpoint_sha256": sha256(source),
            "method": method,
            "precision": precision,
            "threshold": threshold,
            "sweep": sweep,
            "fusions": list(fusions),
            "protocol": protocol,
            "bias_correction": bias_correction,
        }
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
        # made once the inputs are known good (a bad input leaves no folder behind) and
        # before the long part (an unwritable folder is found before, not after)
        kept = _make_folder(out / "cases")
        records: dict[str, dict] = {}
        failed: dict[str, str] = {}
        todo = []
        for files in labelled[rank::world]:
            record = _kept_record(kept / f"{files.case_id}.json", settings) if resume else None
            if record is None:
                todo.append(files)
            else:
                records[files.case_id] = record
        if resume and records:
            log(f"resumed {len(records)} cases from {kept}")

        def finish(record: dict) -> None:
            case_id = record["case"]
            if "failed" in record:
                failed[case_id] = record["failed"]
                log(f"{case_id} failed: {record['failed']}")
                warnings.warn(
                    f"case {case_id} failed: {record['failed']}", CaseWarning, stacklevel=2
                )
                return
            write_json(kept / f"{case_id}.json", record, replace=True)
            records[case_id] = record
            log(
                f"{case_id} Dice: "
                + ", ".join(f"{k} {s['dice']:.3f}" for k, s in record["scores"].items())
            )

        if workers == 1 or len(todo) <= 1:
            for files in todo:
                finish(_score_case(files, model, meta, device, settings))
        else:
            _pooled(todo, settings, checkpoint, device, local_rank, workers, finish)
        if world > 1:
            import torch.distributed as dist

            shards: list = [None] * world
            dist.all_gather_object(shards, (records, failed))
            records = {k: v for shard in shards for k, v in shard[0].items()}
            failed = {k: v for shard in shards for k, v in shard[1].items()}
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()

    if not records:
        reasons = "; ".join(f"{k}: {v}" for k, v in sorted(failed.items())[:3])
        raise CaseError(data_dir, f"no case could be evaluated ({reasons})")
    results = {
        "checkpoint": str(checkpoint),
        "checkpoint_file": str(source),
        "method": method,
        "model_kind": meta.get("kind", "cam"),
        "input_sizes": meta.get("input_sizes"),  # a second stage's; None for CAM networks
        "protocol": protocol,
        "bias_correction": bias_correction,
        "protocol_settings": next(
            (r["protocol_settings"] for r in records.values() if "protocol_settings" in r), {}
        ),
        **cohort(records, sweep),
        "failed": dict(sorted(failed.items())),
        "training": {k: meta[k] for k in ("variant", "data") if k in meta},
        "ranks": world,
        "workers": workers,
        "precision": precision,
        "versions": _versions(),
    }
    if rank == 0:
        write_json(out / "results.json", results, replace=True)
        write_file(out / "results.md", results_table(results), replace=True)
        if sweep:
            plot_sweep(results, out / "dice_vs_threshold.png")
    return results


def _pooled(todo, settings, checkpoint, device, local_rank, workers, finish) -> None:
    """Score ``todo`` on ``workers`` processes, handing each record to ``finish`` in turn."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(checkpoint, device, local_rank, threads),
    ) as pool:
        futures = [pool.submit(_worker_case, files, settings) for files in todo]
        for future in as_completed(futures):
            finish(future.result())
