"""Turn a folder of BraTS cases into the 2-D slice cache that training reads.

Cache layout (``OUT``)::

    meta.json          modalities, size, normalisation, bias_correction, cases, spacing,
                       shapes, source, counts
    images.npy         float16 (N, M, S, S)  normalised axial slices, modality order of meta
    labels.npy         uint8 (N,)            1 when the slice holds any tumour voxel
    masks.npy          uint8 (N, S, S)       whole-tumour mask (evaluation only)
    case_index.npy     int32 (N,)            index into meta["cases"]
    slice_index.npy    int16 (N,)            the slice's z in its case
    splits/{train,val,test}.txt              case ids, split by patient

Slices without brain are dropped. Non-square slices are zero-padded to a square, then resized
to ``S`` (antialiased bilinear for images, nearest for masks) by the same function that
inference uses (:func:`equicam.core.preprocess.to_input`). With ``bias_correction`` each
sequence is divided by its fitted bias field before it is normalised, as inference does for a
checkpoint trained on such a cache.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from equicam.core.atomic import folder_in_place
from equicam.core.brats import MODALITIES, Case, CaseError, CaseWarning, find_cases, load_case
from equicam.core.errors import EquicamError
from equicam.core.preprocess import (
    BIAS_DEGREE,
    NORMALISATION,
    brain_mask,
    normalise_images,
    to_input,
)

SPLITS = ("train", "val", "test")


def square_resize(slices: np.ndarray, size: int, *, nearest: bool = False) -> np.ndarray:
    """:func:`preprocess.to_input` for numpy ``(N, C, Y, X)`` arrays (the one resize of both
    training data and inference)."""
    import torch

    return to_input(torch.from_numpy(np.ascontiguousarray(slices)), size, nearest=nearest).numpy()


def case_slices(
    case: Case, modalities: Sequence[str], size: int, bias_degree: int = 0
) -> dict[str, np.ndarray]:
    """One case's slices as the cache holds them: those with brain, each sequence normalised
    (:func:`~equicam.core.preprocess.normalise_images`) and resized to ``size``.

    Parameters
    ----------
    case
        A loaded case with its segmentation.
    modalities
        Sequences to keep, in this order.
    size
        Side of the square slices.
    bias_degree
        Degree of the bias field each sequence is divided by first (0: none).

    Returns
    -------
    dict
        ``images`` float16 ``(N, M, size, size)``, ``masks`` uint8 ``(N, size, size)`` (whole
        tumour, nearest), ``labels`` uint8 ``(N,)`` (1 where the slice holds tumour) and ``z``
        int16 ``(N,)`` (each slice's index in the case).
    """
    scans = {m: case.images[m] for m in modalities}
    keep = np.flatnonzero(brain_mask(scans).any(axis=(1, 2)))
    volumes = normalise_images(scans, bias_degree)
    images = np.stack([volumes[m][keep] for m in modalities], axis=1)
    masks = case.whole_tumour[keep].astype(np.uint8)
    return {
        "images": square_resize(images, size).astype(np.float16),
        "masks": square_resize(masks[:, None], size, nearest=True)[:, 0].astype(np.uint8),
        "labels": masks.any(axis=(1, 2)).astype(np.uint8),
        "z": keep.astype(np.int16),
    }


def cached_spacing(
    spacing: Sequence[float], shape: Sequence[int], size: int
) -> tuple[float, float, float]:
    """Voxel size in mm ``(z, y, x)`` of a case's cached slices.

    Slices are padded to a square of the larger in-plane side and resized to ``size``, so both
    in-plane sizes scale by ``side / size``; ``spacing`` and ``shape`` are the case's own.
    """
    scale = max(shape[1], shape[2]) / size
    return float(spacing[0]), float(spacing[1]) * scale, float(spacing[2]) * scale


def split_cases(case_ids: Sequence[str], seed: int, fractions=(0.7, 0.15, 0.15)) -> dict:
    """Split case ids by patient into train/val/test, reproducibly.

    Every split gets at least one case when there are three or more.
    """
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n = len(ids)
    n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
    n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
    n_train = n - n_val - n_test
    shuffled = [ids[i] for i in order]
    parts = (shuffled[:n_train], shuffled[n_train : n_train + n_val], shuffled[n_train + n_val :])
    return {name: sorted(part) for name, part in zip(SPLITS, parts, strict=True)}


def prepare(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    size: int = 240,
    seed: int = 0,
    modalities: Sequence[str] = MODALITIES,
    bias_correction: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Build the slice cache of every case with a segmentation under ``data_dir``.

    Parameters
    ----------
    data_dir
        Folder of BraTS cases in any supported layout.
    out_dir
        New or empty folder for the cache. The cache is built in a temporary folder beside
        it and renamed to ``out_dir`` in one step when complete (see
        :func:`equicam.core.atomic.folder_in_place`): a killed run leaves no half cache, and
        a folder that already holds anything is refused, never overwritten.
    size
        Side of the cached square slices.
    seed
        Seed of the patient split.
    modalities
        Modalities to cache; every case must have all of them.
    bias_correction
        Divide each sequence by its fitted bias field (degree
        :data:`~equicam.core.preprocess.BIAS_DEGREE`) before normalising it; recorded in
        ``meta.json``, and by training in the checkpoint, so that inference does the same.
    log
        Receives one line per case.

    Returns
    -------
    dict
        The written ``meta.json`` content.
    """
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 1024:
        raise EquicamError("--size", f"must be an integer from 16 to 1024, got {size!r}")
    cases = find_cases(data_dir)
    with folder_in_place(out_dir) as out:
        meta = _prepare_into(out, data_dir, cases, size, seed, modalities, bias_correction, log)
    return meta


def _prepare_into(
    out: Path, data_dir, cases, size, seed, modalities, bias_correction, log
) -> dict:
    parts = []
    work = out / "parts"
    work.mkdir()
    kept, spacing, shapes = [], {}, {}
    for files in cases:
        if files.seg is None:
            warnings.warn(f"{files.case_id}: no segmentation, skipped", CaseWarning, stacklevel=3)
            continue
        missing = [m for m in modalities if m not in files.images]
        if missing:
            raise CaseError(files.folder, f"case {files.case_id} lacks {', '.join(missing)}")
        case = load_case(files, modalities)
        slices = case_slices(case, modalities, size, BIAS_DEGREE if bias_correction else 0)
        path = work / f"{len(kept)}.npz"
        np.savez(path, **slices)
        parts.append(path)
        spacing[files.case_id] = list(case.spacing)
        shapes[files.case_id] = list(case.images[modalities[0]].shape)
        kept.append(files.case_id)
        log(f"{files.case_id}: {slices['z'].size} slices, {slices['labels'].sum()} with tumour")
    if not kept:
        raise CaseError(data_dir, "no case with a segmentation to prepare")
    _write_arrays(out, parts, size, len(modalities))
    shutil.rmtree(work)

    splits = split_cases(kept, seed)
    (out / "splits").mkdir()
    for name, ids in splits.items():
        (out / "splits" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    labels = np.load(out / "labels.npy")
    meta = {
        "modalities": list(modalities),
        "size": size,
        "normalisation": NORMALISATION,
        "bias_correction": bias_correction,
        "cases": kept,
        "spacing": spacing,
        "shapes": shapes,
        "source": str(Path(data_dir).resolve()),
        "seed": seed,
        "n_slices": int(labels.size),
        "n_positive": int(labels.sum()),
        "splits": {k: len(v) for k, v in splits.items()},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def _write_arrays(out: Path, parts: list[Path], size: int, n_modalities: int) -> None:
    counts = []
    for path in parts:
        with np.load(path) as part:
            counts.append(part["z"].size)
    n = sum(counts)
    images = np.lib.format.open_memmap(
        out / "images.npy", mode="w+", dtype=np.float16, shape=(n, n_modalities, size, size)
    )
    masks = np.lib.format.open_memmap(
        out / "masks.npy", mode="w+", dtype=np.uint8, shape=(n, size, size)
    )
    labels = np.empty(n, np.uint8)
    case_index = np.empty(n, np.int32)
    slice_index = np.empty(n, np.int16)
    start = 0
    for index, (path, count) in enumerate(zip(parts, counts, strict=True)):
        with np.load(path) as part:
            images[start : start + count] = part["images"]
            masks[start : start + count] = part["masks"]
            labels[start : start + count] = part["labels"]
            slice_index[start : start + count] = part["z"]
        case_index[start : start + count] = index
        start += count
    images.flush()
    masks.flush()
    np.save(out / "labels.npy", labels)
    np.save(out / "case_index.npy", case_index)
    np.save(out / "slice_index.npy", slice_index)
    del images, masks
