"""The second stage: a 2-D segmentation network trained on refined pseudo-masks.

Beside the CAM networks (the method under study), one network sees every sequence at once as
channels, with ``context`` neighbouring slices above and below each (edges repeat the first and
last slice), and predicts a tumour probability per pixel. It is the same U-Net as a CAM network
(:class:`~equicam.core.model.CAMNet`) with more input channels; its two output channels are
per-pixel logits (0 = healthy, 1 = tumour) rather than a map pooled into a slice label.

Its checkpoint is one ``.safetensors`` file like the CAM models' (:mod:`equicam.core.checkpoint`)
with ``"kind": "segnet"`` and its :class:`SegConfig` as ``model`` in the metadata, and two
settings chosen on validation patients (:func:`~equicam.core.segnet_fit.best_setting`): the mask
``threshold`` and the ``input_sizes`` it runs at. A slice is resized to each of those sizes
(the first is the size it was trained at) and the probabilities are averaged: a larger size
shows a small lesion over more pixels, closer to the tumours the network mostly learnt from.

Run on a case (``equicam cam``/``evaluate``, the plugin), it makes one map, ``second_stage``
(its tumour probability), whose mask is that map at the checkpoint's threshold.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from equicam.core.checkpoint import SECOND_STAGE
from equicam.core.model import CAMNet
from equicam.core.preprocess import NORMALISATION, from_input

KIND = SECOND_STAGE
MAP = "second_stage"  # the name of its map in files, layers and results


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
        # Sizes a slice is seen at, probabilities averaged; a checkpoint's input_sizes.
        self.input_sizes: tuple[int, ...] = (self.config.input_size,)
        self.net = CAMNet(self.config.widths, 2, "case", self.config.in_channels)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The sequences it needs, as a CAM model names its networks'."""
        return self.config.modalities

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 2, S, S)``."""
        return self.net(x)


def with_context(
    volume: np.ndarray, context: int, slices: Sequence[int] | None = None
) -> np.ndarray:
    """Stack each slice with its neighbours: ``(Z, M, Y, X) -> (N, M * (2 context + 1), Y, X)``.

    Channels run slice by slice from ``z - context`` to ``z + context``, every sequence within a
    slice; slices beyond the volume repeat its first or last slice. ``slices``: the N slices
    wanted (default all Z).
    """
    z = volume.shape[0]
    centres = np.arange(z) if slices is None else np.asarray(slices, int)
    index = np.clip(centres[:, None] + np.arange(-context, context + 1)[None], 0, z - 1)
    stacked = volume[index]  # (N, 2c+1, M, Y, X)
    return stacked.reshape(len(centres), -1, *volume.shape[2:])


def segment_steps(
    model: SegNet,
    images: Mapping[str, np.ndarray],
    *,
    slices: Sequence[int] | None = None,
    device: str = "cpu",
    batch_size: int = 16,
) -> Generator:
    """The tumour probability of a normalised volume, as a generator that yields progress.

    Parameters
    ----------
    model
        The second-stage network (left on its device; moved to ``device`` for the run).
    images
        Modality -> normalised volume ``(Z, Y, X)``; the model's every sequence is needed.
    slices
        Slice indices to compute (e.g. the current slice); default every slice with brain.
    device
        A torch device string.
    batch_size
        Slices per forward pass.

    Returns
    -------
    CamResult
        The generator's return value: the probability ``(Z, Y, X)`` float32 as map
        :data:`MAP` (the mean over the model's ``input_sizes``), zero outside the brain and on
        slices not computed; as its slice probability, each slice's highest.
    """
    from equicam.core.inference import CamResult, Progress, copy_input, inference_copy

    missing = [m for m in model.config.modalities if m not in images]
    if missing:
        raise ValueError(f"the second stage needs {', '.join(missing)} as well")
    volume = np.stack([images[m] for m in model.config.modalities], axis=1).astype(np.float32)
    brain = (volume != 0).any(axis=1)
    has_brain = brain.any(axis=(1, 2))
    wanted = range(len(brain)) if slices is None else slices
    todo = [z for z in wanted if 0 <= z < len(brain) and has_brain[z]]
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    net = inference_copy(model.to(device).eval().net, device)
    shape = volume.shape[2:]
    out = np.zeros(brain.shape, np.float32)
    yield Progress(0, len(batches), f"second stage on {len(todo)} slices")
    for done, batch in enumerate(batches, 1):
        x = torch.from_numpy(with_context(volume, model.config.context, batch))
        with torch.inference_mode():
            prob = sum(
                from_input(torch.softmax(net(copy_input(x, size, device)), dim=1)[:, 1:], shape)
                for size in model.input_sizes
            )
            out[batch] = (prob[:, 0] / len(model.input_sizes)).cpu().numpy()
        yield Progress(done, len(batches), f"second stage: slices {batch[0]}-{batch[-1]}")
    computed = np.zeros(len(brain), bool)
    computed[todo] = True
    out *= brain
    slice_prob = {MAP: out.max(axis=(1, 2))}  # a slice's most confident pixel
    return CamResult(KIND, {MAP: out}, slice_prob=slice_prob, computed=computed, brain=brain)


def segment_volume(
    model: SegNet,
    images: Mapping[str, np.ndarray],
    *,
    device: str = "cpu",
    batch_size: int = 16,
) -> np.ndarray:
    """The tumour probability ``(Z, Y, X)`` float32 of a normalised volume (every slice; see
    :func:`segment_steps`)."""
    from equicam.core.inference import run_to_end

    steps = segment_steps(model, images, device=device, batch_size=batch_size)
    return run_to_end(steps).maps[MAP]


def save_segnet(path: str | os.PathLike, model: SegNet, meta: dict):
    """Write the second stage's checkpoint (see the module's notes); returns its path."""
    from equicam.core.checkpoint import save_checkpoint

    return save_checkpoint(
        path, model, {**meta, "kind": KIND, "input_sizes": list(model.input_sizes)}
    )


def load_segnet(path: str | os.PathLike, device: str = "cpu") -> tuple[SegNet, dict]:
    """Load a second-stage checkpoint (a path, or ``second-stage``: the bundled one) for
    inference; never unpickles anything.

    Raises
    ------
    CheckpointError
        Not a second-stage checkpoint, settings not understood, or weights that do not fit.
    """
    from safetensors.torch import load_file

    from equicam.core.checkpoint import (
        CheckpointError,
        model_from_weights,
        read_metadata,
        resolve_checkpoint,
    )

    path = resolve_checkpoint(path)
    meta = read_metadata(path)
    if meta.get("kind") != KIND:
        raise CheckpointError(path, "not a second-stage (segnet) checkpoint")
    if meta.get("preprocessing", NORMALISATION) != NORMALISATION:
        raise CheckpointError(path, f"trained on '{meta['preprocessing']}' inputs")
    try:
        config = SegConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(path, f"second-stage settings unusable ({error})") from None
    model, _ = model_from_weights(path, lambda: SegNet(config), load_file(str(path)))
    model.input_sizes = tuple(meta.get("input_sizes", model.input_sizes))
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


def with_slice_labels(
    target: np.ndarray, weight: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-mask targets corrected by the slice labels the CAM networks learnt from.

    A slice labelled healthy is healthy throughout, whatever the pseudo-mask says. A slice
    labelled tumour whose pseudo-mask is empty holds a tumour the CAM missed (small ones,
    mostly): it is left out rather than taught as healthy.

    Parameters
    ----------
    target
        ``(N, S, S)`` uint8 pseudo-mask targets.
    weight
        ``(N, S, S)`` float32 voxel weights.
    labels
        ``(N,)`` slice labels in {0, 1}.

    Returns
    -------
    (target, weight)
        New arrays of the same shapes and types.
    """
    healthy = np.asarray(labels) == 0
    missed = ~healthy & ~np.asarray(target, bool).any(axis=(1, 2))
    target, weight = np.array(target, np.uint8), np.array(weight, np.float32)
    target[healthy] = 0
    weight[healthy] = 1.0
    weight[missed] = 0.0
    return target, weight
