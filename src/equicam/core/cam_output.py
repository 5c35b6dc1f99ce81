"""The back end of ``equicam cam``: one case's maps and masks in a folder of their own.

Layout (``OUT``)::

    OUT/<case id>/cam-<map>.nii.gz     float32 map in the case's geometry
    OUT/<case id>/mask-<map>.nii.gz    uint8 pseudo-mask
    OUT/<case id>/cam.json             provenance (settings, bias correction, versions) and the
                                       SHA-256 of every file written

A run never writes into a folder that exists: a second run of the same case goes to
``OUT/<case id>_2`` (then ``_3``...), so two runs, at once or one after the other, never
replace each other's files, and a mask corrected by hand stays as it is. The folder is built
under a temporary name and named when whole: a killed run or a full disk leaves no half one.
File names never end like a BraTS scan (``_flair``, ``-t2f``...), so an output folder is
never mistaken for a case.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from equicam.core.atomic import building, place_new, write_json
from equicam.core.brats import CaseWarning, load_case, save_volume
from equicam.core.evaluation import (
    CAM_FUSIONS,
    _check_threshold,
    _load_model,
    _protocol,
    _thresholds_of,
    _versions,
    bias_correction_of,
    normalised_images,
)
from equicam.core.refine import apply_protocol


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def description(protocol: str, name: str, run: str) -> str:
    """What a map or mask file's header says made it (its ``descrip``, 79 characters at most):
    ``equicam protocol=<protocol> map=<name> run=<run>``."""
    return f"equicam protocol={protocol} map={name} run={run}"


def described_protocol(text: str) -> str | None:
    """The protocol named by a header description of :func:`description`, None if none."""
    found = re.match(r"equicam protocol=(\S+)", text)
    return found.group(1) if found else None


def changed_since_run(folder: str | os.PathLike) -> list[str]:
    """Files of an earlier run in ``folder`` that differ from what it wrote (edited by hand),
    judged by the SHA-256 recorded in its ``cam.json``; missing files count as changed."""
    folder = Path(folder)
    try:
        recorded = json.loads((folder / "cam.json").read_text()).get("sha256", {})
    except (OSError, ValueError, AttributeError):
        return []
    return sorted(
        name
        for name, digest in recorded.items()
        if not (folder / name).is_file() or sha256(folder / name) != digest
    )


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
    bias_correction: bool | None = None,
) -> list[Path]:
    """Write one case's per-modality and fused CAMs and pseudo-masks as NIfTI.

    Parameters
    ----------
    case_path
        A case folder or any one of its files (any BraTS layout).
    checkpoint
        ``equivariant`` or ``baseline`` (bundled) or a ``.safetensors`` file: CAM networks or
        a second stage (:mod:`equicam.core.segnet`, told by its metadata), whose one map is
        ``second_stage``, its protocol ``threshold`` and its method ``segnet``.
    out_dir
        Output folder, created if needed; the run writes into a new folder inside it
        (see the module docstring).
    method
        ``cam``, ``gradcam`` or ``gradcampp``.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    threshold
        Mask threshold of every map; default the checkpoint's (see
        :func:`~equicam.core.evaluation.chosen_thresholds`).
    precision
        ``auto``, ``fp32`` or ``bf16`` (see :func:`~equicam.core.inference.resolve_precision`).
    protocol
        ``paper`` or ``refined`` post-processing (:mod:`equicam.core.refine`); default the
        checkpoint's recommendation.
    bias_correction
        Divide each sequence by its fitted bias field before normalising it; default as the
        checkpoint says (:func:`~equicam.core.evaluation.bias_correction_of`).

    Returns
    -------
    list of Path
        ``cam-<name>.nii.gz`` (float32) and ``mask-<name>.nii.gz`` (uint8) for every modality
        the checkpoint and the case share and for ``fused_<fusion>`` (a second stage: for
        ``second_stage``, its probability), in the case's geometry, then ``cam.json``.
    """
    from equicam.core.inference import model_maps, resolve_precision, run_to_end

    if threshold is not None:
        _check_threshold(threshold)
    model, meta, device, source = _load_model(checkpoint, device)
    protocol, method = _protocol(meta, protocol, source, method)
    precision = resolve_precision(precision, device)
    case = load_case(case_path, list(model.modalities))
    bias_correction = bias_correction_of(meta, bias_correction)
    images = normalised_images(case, model.modalities, bias_correction)
    result = run_to_end(
        model_maps(
            model,
            images,
            method=method,
            device=device,
            fusions=CAM_FUSIONS,
            precision=precision,
        )
    )
    maps, masks, settings = apply_protocol(
        result, protocol, meta, case.spacing, threshold, model.fusion_weights, images
    )
    wanted = Path(out_dir) / case.case_id
    run = Path(str(checkpoint)).stem
    # The run's folder is built beside its name and named in one step at the end: a killed
    # or failed run leaves no half folder (its temporary goes on the next run of the case).
    with building(wanted) as work:
        jobs = [(v, work / f"cam-{name}.nii.gz", "float32", name) for name, v in maps.items()]
        jobs += [(m, work / f"mask-{name}.nii.gz", "uint8", name) for name, m in masks.items()]

        def write(job):
            array, path, dtype, name = job
            return save_volume(
                array,
                case.geometry,
                path,
                dtype=dtype,
                protect=case.files.inputs,
                description=description(protocol, name, run),
            )

        # zlib releases the GIL while it compresses: one file per core at a time.
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            written = list(pool.map(write, jobs))
        provenance = {
            "case": case.case_id,
            "case_folder": str(case.files.folder),
            "checkpoint": str(checkpoint),
            "checkpoint_file": str(source),
            "method": method,
            "model_kind": meta.get("kind", "cam"),
            "input_sizes": meta.get("input_sizes"),  # a second stage's; None for CAM networks
            "protocol": protocol,
            "bias_correction": bias_correction,
            "thresholds": _thresholds_of(settings),
            "protocol_settings": settings,
            "modalities": list(result.maps),
            "device": device,
            "precision": precision,
            "versions": _versions(),
            "files": [p.name for p in written],
            "sha256": {p.name: sha256(p) for p in written},
        }
        write_json(work / "cam.json", provenance)
        out = place_new(work, wanted)
    if out != wanted:
        edited = changed_since_run(wanted)
        note = f" (changed since that run: {', '.join(edited)})" if edited else ""
        warnings.warn(
            f"{wanted} holds an earlier run{note}; it is kept, this run writes {out}",
            CaseWarning,
            stacklevel=2,
        )
    return [*(out / p.name for p in written), out / "cam.json"]
