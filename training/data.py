"""The slice cache of ``equicam prepare`` as a torch dataset, split by patient."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from equicam.core.errors import EquicamError
from equicam.core.prepare import cached_spacing


class SliceCache(Dataset):
    """Slices of one split: ``(images (M, S, S) float32, label long)``.

    Parameters
    ----------
    cache
        Folder written by ``equicam prepare``.
    split
        ``train``, ``val`` or ``test``.
    modalities
        Modalities to return, in this order; each must be in the cache.
    """

    def __init__(self, cache: str | Path, split: str, modalities) -> None:
        self.root = Path(cache)
        self.meta = _read_meta(self.root)
        missing = [m for m in modalities if m not in self.meta["modalities"]]
        if missing:
            raise EquicamError(self.root, f"the cache has no {', '.join(missing)}")
        self.channels = [self.meta["modalities"].index(m) for m in modalities]
        self.modalities = list(modalities)
        split_path = self.root / "splits" / f"{split}.txt"
        try:
            ids = split_path.read_text().split()
        except (OSError, UnicodeDecodeError) as error:
            raise EquicamError(split_path, f"cannot read the {split} split ({error})") from None
        unknown = [i for i in ids if i not in self.meta["cases"]]
        if unknown:
            raise EquicamError(split_path, f"names cases meta.json does not hold: {unknown[:3]}")
        self.case_ids = ids
        wanted = np.array([self.meta["cases"].index(i) for i in ids], dtype=np.int32)
        case_index = _load_array(self.root / "case_index.npy")
        labels = _load_array(self.root / "labels.npy")
        self.images = _load_array(self.root / "images.npy", mmap_mode="r")
        rows = len(case_index)
        for name, array in (("labels.npy", labels), ("images.npy", self.images)):
            if array.ndim < 1 or len(array) != rows:
                raise EquicamError(
                    self.root / name, f"holds {array.shape[:1]} rows, case_index.npy {rows}"
                )
        self.size = int(self.meta["size"])
        if self.images.shape[1:] != (len(self.meta["modalities"]), self.size, self.size):
            raise EquicamError(
                self.root / "images.npy",
                f"slices of shape {self.images.shape[1:]}, meta.json says "
                f"{len(self.meta['modalities'])} x {self.size} x {self.size}",
            )
        self.indices = np.flatnonzero(np.isin(case_index, wanted))
        self.case_index = case_index[self.indices]
        self.labels = labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def bias_correction(self) -> bool:
        """Whether ``equicam prepare --bias-correction`` made the cache."""
        return bool(self.meta.get("bias_correction", False))

    def check_preprocessing(self, meta: dict, checkpoint) -> None:
        """Refuse a checkpoint whose inputs are prepared otherwise than this cache's slices.

        Raises
        ------
        EquicamError
            Naming the cache, when its bias correction is not the checkpoint's ``meta``'s.
        """
        wanted = bool(meta.get("bias_correction", False))
        if wanted != self.bias_correction:
            raise EquicamError(
                self.root,
                f"prepared {_with(self.bias_correction)} bias-field correction, but {checkpoint} "
                f"takes inputs {_with(wanted)} it; prepare a cache {_with(wanted)} equicam "
                "prepare --bias-correction"
                + ("" if wanted else ", or calibrate with --bias-correction"),
            )

    def __getitem__(self, item: int):
        row = self.indices[item]
        x = torch.from_numpy(self.images[row, self.channels].astype(np.float32))
        return x, int(self.labels[item])

    def case_spacing(self, case_id: str) -> tuple[float, float, float]:
        """Voxel size in mm ``(z, y, x)`` of a case's cached slices
        (:func:`~equicam.core.prepare.cached_spacing`). Caches written before ``shapes`` was
        recorded are taken to hold BraTS's 240-voxel slices."""
        shape = self.meta.get("shapes", {}).get(case_id, (0, 240, 240))
        return cached_spacing(self.meta["spacing"][case_id], shape, self.size)

    def tumour_areas_mm2(self) -> np.ndarray:
        """Tumour area of each slice of the split in mm2 (at the cache's resolution), ``(N,)``."""
        masks = _load_array(self.root / "masks.npy", mmap_mode="r")
        pixels = np.array([np.count_nonzero(masks[row]) for row in self.indices], dtype=np.float64)
        pixel_mm2 = np.empty_like(pixels)
        for case, case_id in enumerate(self.meta["cases"]):
            here = self.case_index == case
            if here.any():
                _, y, x = self.case_spacing(case_id)
                pixel_mm2[here] = y * x
        return pixels * pixel_mm2

    def drop_small_tumours(self, min_mm2: float) -> int:
        """Leave out the tumour slices whose tumour covers less than ``min_mm2``; returns how many.

        Such a slice is labelled "tumour" although a classifier at the network's resolution
        sees a few pixels of it at most: for the classifier it is label noise.
        """
        small = (self.labels == 1) & (self.tumour_areas_mm2() < min_mm2)
        self.indices, self.case_index = self.indices[~small], self.case_index[~small]
        self.labels = self.labels[~small]
        return int(small.sum())

    def case_labels(self, case_id: str) -> np.ndarray:
        """A case's slice labels ``(n,)`` in {0, 1}, in the order of :meth:`case_slices`."""
        return np.asarray(self.labels[self.case_index == self.meta["cases"].index(case_id)])

    def case_slices(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        """A case's cached slices ``(n, M, S, S)`` float32 and their masks ``(n, S, S)``."""
        case = self.meta["cases"].index(case_id)
        rows = self.indices[self.case_index == case]
        images = self.images[rows][:, self.channels].astype(np.float32)
        masks = _load_array(self.root / "masks.npy", mmap_mode="r")[rows]
        return images, np.asarray(masks)


_META_KEYS = {"modalities": list, "cases": list, "size": int}


def _read_meta(root: Path) -> dict:
    """``meta.json`` of a cache, refused by name when missing, corrupt or incomplete."""
    path = root / "meta.json"
    if not path.is_file():
        raise EquicamError(path, "no slice cache here; run `equicam prepare` first")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EquicamError(path, f"corrupt cache metadata ({error})") from None
    if not isinstance(meta, dict):
        raise EquicamError(path, "corrupt cache metadata (not a JSON object)")
    for key, kind in _META_KEYS.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise EquicamError(
                path, f"corrupt cache metadata ('{key}' missing or not a {kind.__name__})"
            )
    return meta


def _load_array(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """One ``.npy`` array of a cache, refused by name when missing or unreadable."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise EquicamError(path, "missing from the slice cache; prepare it again") from None
    except (OSError, ValueError, EOFError) as error:
        raise EquicamError(path, f"corrupt or truncated array ({error})") from None


class BalancedSampler(Sampler[int]):
    """Slices drawn with replacement so that tumour and tumour-free slices are equally likely.

    An epoch draws as many slices as the split holds, the same draw on every rank for a given
    ``seed`` and epoch; each rank takes every ``world``-th of them (as DistributedSampler does).

    Parameters
    ----------
    labels
        ``(N,)`` slice labels in {0, 1}.
    seed
        Seed of the draws; call :meth:`set_epoch` to draw anew each epoch.
    rank, world
        This process and the number of processes.
    draws
        Slices drawn per epoch over all ranks (0: as many as ``labels`` holds).
    """

    def __init__(
        self, labels: np.ndarray, *, seed: int = 0, rank: int = 0, world: int = 1, draws: int = 0
    ):
        labels = np.asarray(labels)
        counts = np.bincount(labels, minlength=2).astype(np.float64)
        self.weights = torch.from_numpy(1.0 / counts[labels])
        self.draws = int(draws) or len(labels)
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        """Use the draw of ``epoch``."""
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        total = len(self) * self.world
        draw = torch.multinomial(self.weights, total, replacement=True, generator=generator)
        return iter(draw[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return -(-self.draws // self.world)


def _with(flag: bool) -> str:
    return "with" if flag else "without"
