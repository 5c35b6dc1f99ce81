"""The second stage: a 2-D segmentation network trained on refined pseudo-masks.

Beside the CAM networks (the method under study), one network sees every sequence at once as
channels, with ``context`` neighbouring slices above and below each (edges repeat the first and
last slice), and predicts a tumour probability per pixel. It is the same U-Net as a CAM network
(:class:`~equicam.core.model.CAMNet`) with more input channels; its two output channels are
per-pixel logits (0 = healthy, 1 = tumour) rather than a map pooled into a slice label.

Its checkpoint is one ``.safetensors`` file like the CAM models' (:mod:`equicam.core.checkpoint`)
with ``"kind": "segnet"`` and its :class:`SegConfig` as ``model`` in the metadata, and the mask
threshold chosen on validation patients under ``threshold``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from equicam.core.model import CAMNet
from equicam.core.preprocess import NORMALISATION, from_input, to_input

KIND = "segnet"


@dataclass(frozen=True)
class SegConfig:
    """Architecture of the second-stage network.

    Attributes
    ----------
    modalities
        Sequences fed as channels, in this order.
    context
        Neighbouring slices on each side of the predicted one.
    widths
        Channels of the four encoder levels.
    input_size
        Side, in pixels, of the square slices the network sees.
    """

    modalities: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
    context: int = 1
    widths: tuple[int, ...] = (16, 32, 64, 64)
    input_size: int = 64

    @property
    def in_channels(self) -> int:
        """Input channels: every sequence at each of the ``2 context + 1`` slices."""
        return len(self.modalities) * (2 * self.context + 1)

    def to_dict(self) -> dict:
        """Plain JSON-able form."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> SegConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown second-stage settings: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class SegNet(nn.Module):
    """Per-pixel tumour logits from several sequences and neighbouring slices.

    ``forward`` maps ``(N, in_channels, S, S)`` to ``(N, 2, S, S)`` logits.
    """

    def __init__(self, config: SegConfig | None = None) -> None:
        super().__init__()
        self.config = config or SegConfig()
        # fusion weights belong to CAM models; save_checkpoint asks every model for them
        self.fusion_weights = None
        self.net = CAMNet(self.config.widths, 2, "case", self.config.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 2, S, S)``."""
        return self.net(x)


def with_context(volume: np.ndarray, context: int) -> np.ndarray:
    """Stack each slice with its neighbours: ``(Z, M, Y, X) -> (Z, M * (2 context + 1), Y, X)``.

    Channels run slice by slice from ``z - context`` to ``z + context``, every sequence within a
    slice; slices beyond the volume repeat its first or last slice.
    """
    z = volume.shape[0]
    index = np.clip(np.arange(z)[:, None] + np.arange(-context, context + 1)[None], 0, z - 1)
    stacked = volume[index]  # (Z, 2c+1, M, Y, X)
    return stacked.reshape(z, -1, *volume.shape[2:])


def segment_volume(
    model: SegNet,
    images: Mapping[str, np.ndarray],
    *,
    device: str = "cpu",
    batch_size: int = 16,
) -> np.ndarray:
    """The tumour probability ``(Z, Y, X)`` float32 of a normalised volume.

    Parameters
    ----------
    model
        The second-stage network (left on its device; moved to ``device`` for the run).
    images
        Modality -> normalised volume ``(Z, Y, X)``; the model's every sequence is needed.
    device
        A torch device string.
    batch_size
        Slices per forward pass.
    """
    missing = [m for m in model.config.modalities if m not in images]
    if missing:
        raise ValueError(f"the second stage needs {', '.join(missing)} as well")
    volume = np.stack([images[m] for m in model.config.modalities], axis=1).astype(np.float32)
    brain = (volume != 0).any(axis=1)
    stacked = with_context(volume, model.config.context)
    shape = volume.shape[2:]
    net = model.to(device).eval()
    out = np.zeros(brain.shape, np.float32)
    todo = np.flatnonzero(brain.any(axis=(1, 2)))
    with torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            x = to_input(torch.from_numpy(stacked[batch]).to(device), model.config.input_size)
            prob = torch.softmax(net(x), dim=1)[:, 1:]
            out[batch] = from_input(prob, shape)[:, 0].cpu().numpy()
    return out * brain


def save_segnet(path: str | os.PathLike, model: SegNet, meta: dict):
    """Write the second stage's checkpoint (see the module's notes); returns its path."""
    from equicam.core.checkpoint import save_checkpoint

    return save_checkpoint(path, model, {**meta, "kind": KIND})


def load_segnet(path: str | os.PathLike, device: str = "cpu") -> tuple[SegNet, dict]:
    """Load a second-stage checkpoint for inference; never unpickles anything.

    Raises
    ------
    CheckpointError
        Not a second-stage checkpoint, settings not understood, or weights that do not fit.
    """
    from safetensors.torch import load_file

    from equicam.core.checkpoint import CheckpointError, read_metadata

    meta = read_metadata(path)
    if meta.get("kind") != KIND:
        raise CheckpointError(path, "not a second-stage (segnet) checkpoint")
    if meta.get("preprocessing", NORMALISATION) != NORMALISATION:
        raise CheckpointError(path, f"trained on '{meta['preprocessing']}' inputs")
    try:
        model = SegNet(SegConfig.from_dict(meta["model"]))
        model.load_state_dict(load_file(str(path)))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            path, f"second-stage weights or settings unusable ({error})"
        ) from None
    return model.to(device).eval(), meta


def pseudo_targets(
    mask: np.ndarray, core: np.ndarray, confidence: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Targets and voxel weights of a refined pseudo-mask, the uncertain band ignored.

    Parameters
    ----------
    mask
        The refined mask (thresholded, filtered, grown).
    core
        The same before growth: the voxels the map itself calls tumour.
    confidence
        The refined map in [0, 1].

    Returns
    -------
    (target, weight)
        ``target`` uint8 (1 in ``core``); ``weight`` float32: the map's value inside the core
        (confident tumour counts more), 1 outside the grown mask, 0 in the band that growth
        added (neither tumour nor healthy for sure).
    """
    mask, core = np.asarray(mask, bool), np.asarray(core, bool)
    weight = np.where(core, np.asarray(confidence, np.float32), np.float32(1.0))
    weight[mask & ~core] = 0.0
    return core.astype(np.uint8), weight.astype(np.float32)
