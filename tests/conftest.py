"""Shared fixtures and helpers: cases written to disk with nibabel, for real."""

import json
import socket
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from equicam.core.synth import write_case as write_synthetic_case


@pytest.fixture(autouse=True)
def own_settings_file(tmp_path, monkeypatch):
    """Every test remembers its settings in its own file, never in the user's config."""
    monkeypatch.setenv("EQUICAM_CONFIG", str(tmp_path / "equicam-settings.json"))
    return tmp_path / "equicam-settings.json"


@pytest.fixture(scope="session")
def synthetic_cases(tmp_path_factory):
    """Four small synthetic cases (three with tumour, one per type) in the BraTS 2021 layout.

    Case indices 0 (high-grade), 6 (low-grade), 8 (multifocal) and 9 (tumour-free) of seed 7.
    """
    data = tmp_path_factory.mktemp("synthetic")
    for index in (0, 6, 8, 9):
        write_synthetic_case(data, seed=7, index=index, size="small")
    return data


def two_process_torchrun(module: str, *args: str) -> list[str]:
    """The command that runs ``python -m module args`` as 2 processes under torchrun."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        "-m",
        module,
        *args,
    ]


BRATS_LPS = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
SUFFIXES = {
    "brats2021": {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg"},
    "brats2023": {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "seg": "-seg"},
}
MODALITY_VALUES = {"t1": 10, "t1ce": 20, "t2": 30, "flair": 40}


def raw_labels(shape, layout):
    """A segmentation in file order with a known pattern of raw labels, as ``layout`` codes them.

    Slabs along the first file axis: core at i = 2, 3, oedema at 4, 5, enhancing at 6, 7, all at
    j = 2, 3 and k = 2, 3 (normalised labels 1, 2, 3). ``shape`` needs at least (8, 4, 4).
    """
    codes = {"brats2021": (1, 2, 4), "brats2023": (1, 2, 3), "decathlon": (2, 1, 3)}[layout]
    seg = np.zeros(shape, np.uint8)
    seg[2:4, 2:4, 2:4] = codes[0]  # core (necrotic / non-enhancing)
    seg[4:6, 2:4, 2:4] = codes[1]  # oedema
    seg[6:8, 2:4, 2:4] = codes[2]  # enhancing
    return seg


def modality_volume(modality, shape):
    """The int16 volume write_case stores for a modality: its own constant plus a ramp 0..6."""
    ramp = np.arange(np.prod(shape)).reshape(shape) % 7
    return (MODALITY_VALUES[modality] + ramp).astype(np.int16)


def write_case(
    folder: Path,
    layout: str = "brats2021",
    case_id: str = "Case_001",
    shape=(12, 10, 8),
    affine=BRATS_LPS,
    ext=".nii.gz",
    modalities=("t1", "t1ce", "t2", "flair"),
    seg=True,
) -> Path:
    """Write a tiny case on disk with nibabel (see modality_volume and raw_labels).

    ``layout`` is ``brats2021``, ``brats2023`` or ``decathlon``; ``shape`` and ``affine`` are
    the file's. Returns the case folder (for ``decathlon``, the dataset root that holds
    imagesTr/labelsTr; its 4-D image always has the four channels).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "decathlon":
        (folder / "imagesTr").mkdir(exist_ok=True)
        channels = [modality_volume(m, shape) for m in ("flair", "t1", "t1ce", "t2")]
        image = nib.Nifti1Image(np.stack(channels, axis=-1), affine)
        nib.save(image, folder / "imagesTr" / f"{case_id}{ext}")
        if seg:
            (folder / "labelsTr").mkdir(exist_ok=True)
            labels = nib.Nifti1Image(raw_labels(shape, layout), affine)
            nib.save(labels, folder / "labelsTr" / f"{case_id}{ext}")
        return folder
    names = SUFFIXES[layout]
    for m in modalities:
        image = nib.Nifti1Image(modality_volume(m, shape), affine)
        nib.save(image, folder / f"{case_id}{names[m]}{ext}")
    if seg:
        labels = nib.Nifti1Image(raw_labels(shape, layout), affine)
        nib.save(labels, folder / f"{case_id}{names['seg']}{ext}")
    return folder


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A cache in the `equicam prepare` format (:func:`write_tiny_cache`)."""
    return write_tiny_cache(tmp_path_factory.mktemp("cache"))


def write_tiny_cache(root: Path) -> Path:
    """A cache in the `equicam prepare` format in ``root``: 6 patients x 8 slices, a bright
    square = tumour."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n_cases, per_case, size = 6, 8, 32
    n = n_cases * per_case
    images = rng.normal(0, 0.3, (n, 4, size, size)).astype(np.float16)
    masks = np.zeros((n, size, size), np.uint8)
    labels = np.zeros(n, np.uint8)
    for i in range(n):
        if i % 2:
            y, x = rng.integers(4, 20, 2)
            masks[i, y : y + 8, x : x + 8] = 1
            images[i, :, y : y + 8, x : x + 8] += np.float16(2.0)
            labels[i] = 1
    cases = [f"P{i}" for i in range(n_cases)]
    np.save(root / "images.npy", images)
    np.save(root / "masks.npy", masks)
    np.save(root / "labels.npy", labels)
    np.save(root / "case_index.npy", np.repeat(np.arange(n_cases, dtype=np.int32), per_case))
    np.save(root / "slice_index.npy", np.tile(np.arange(per_case, dtype=np.int16), n_cases))
    (root / "splits").mkdir()
    for split, ids in {"train": cases[:4], "val": cases[4:5], "test": cases[5:]}.items():
        (root / "splits" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    meta = {
        "modalities": ["t1", "t1ce", "t2", "flair"],
        "size": size,
        "cases": cases,
        "spacing": {c: [2.0, 1.0, 1.0] for c in cases},
        "shapes": {c: [per_case, 64, 64] for c in cases},  # 2 mm in-plane once cached at 32
    }
    (root / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="session")
def tiny_segnet(tmp_path_factory, synthetic_cases):
    """A second stage trained for a few steps (training.train_segnet's own loop) on one
    synthetic case's ground truth; its threshold 0.5."""
    import torch

    from equicam.core.brats import load_case
    from equicam.core.preprocess import brain_mask, normalise_volume
    from equicam.core.segnet import SegConfig, SegNet, save_segnet, with_context
    from training.train_segnet import train_steps

    torch.manual_seed(0)
    case = load_case(synthetic_cases / "BraTS2021_00000")
    brain = brain_mask(case.images)
    config = SegConfig(widths=(4, 8, 8, 8), input_size=32)
    volume = np.stack(
        [normalise_volume(case.images[m], brain) for m in config.modalities], axis=1
    ).astype(np.float32)
    target = case.whole_tumour.astype(np.uint8)
    model = SegNet(config)
    train_steps(model, with_context(volume, 1), target, np.ones(target.shape, np.float32), steps=5)
    path = tmp_path_factory.mktemp("segnet") / "seg.safetensors"
    return save_segnet(path, model, {"threshold": 0.5})
