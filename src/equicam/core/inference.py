"""CAM inference over a volume, as a generator that yields progress and returns the maps.

The evaluation protocol of the method, per axial slice: the tumour map (CAM, Grad-CAM or
Grad-CAM++), ReLU, resize back to the slice, min-max to [0, 1], multiplied by the predicted
class (a slice the classifier calls healthy gets an all-zero map), and zero outside the brain.
Slices without brain are skipped. Maps of several modalities are then fused
(:mod:`equicam.core.fusion`).

Grad-CAM and Grad-CAM++ differentiate the tumour logit with respect to
:meth:`CAMNet.features`, the last 3x3 conv block. Because the head is a 1x1 convolution
followed by global average pooling, Grad-CAM at that layer equals the CAM up to a positive
factor per slice (the Grad-CAM paper's own observation); Grad-CAM++ re-weights channels and
differs.

Run it in a thread worker (napari) or exhaust it with :func:`run_to_end`.
"""

from __future__ import annotations

import weakref
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from equicam.core.fusion import FUSION_NAMES, fuse

METHODS = ("cam", "gradcam", "gradcampp")
METHOD_NAMES = {"cam": "CAM", "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++"}
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: str) -> str:
    """``fp32`` or ``bf16`` for ``precision`` on ``device``; ``auto`` is bf16 where the device
    computes it natively (:func:`~equicam.core.device.supports_bf16`), fp32 elsewhere."""
    from equicam.core.device import supports_bf16

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if supports_bf16(device) else "fp32"
    return precision


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` steps, and what is being done."""

    done: int
    total: int
    message: str


@dataclass
class CamResult:
    """Maps of one volume, all ``(Z, Y, X)`` float32 in [0, 1] in display order.

    Attributes
    ----------
    method
        ``cam``, ``gradcam`` or ``gradcampp``.
    maps
        Modality -> gated, normalised map.
    fused
        Fusion name -> fused map.
    slice_prob
        Modality -> ``(Z,)`` tumour probability of each slice (0 where not computed).
    computed
        ``(Z,)`` True for the slices that were computed.
    raw
        Modality -> the map before normalisation and gating (ReLU, resized, zero outside the
        brain): what the ``refined`` protocol (:mod:`equicam.core.refine`) starts from.
    brain
        ``(Z, Y, X)`` True inside the brain (any modality non-zero).
    """

    method: str
    maps: dict[str, np.ndarray]
    fused: dict[str, np.ndarray] = field(default_factory=dict)
    slice_prob: dict[str, np.ndarray] = field(default_factory=dict)
    computed: np.ndarray | None = None
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    brain: np.ndarray | None = None

    def all_maps(self) -> dict[str, np.ndarray]:
        """Every map by evaluation name: modalities, then ``fused_<name>``."""
        return {**self.maps, **{f"fused_{k}": v for k, v in self.fused.items()}}

    def masks(self, threshold: float | Mapping[str, float]) -> dict[str, np.ndarray]:
        """Pseudo-masks ``map >= threshold`` (uint8) of :meth:`all_maps`.

        ``threshold`` is one value for every map, or one per map name of :meth:`all_maps`.
        """
        maps = self.all_maps()
        if isinstance(threshold, Mapping):
            missing = [k for k in maps if k not in threshold]
            if missing:
                raise ValueError(f"no threshold given for {', '.join(missing)}")
            return {k: (v >= threshold[k]).astype(np.uint8) for k, v in maps.items()}
        return {k: (v >= threshold).astype(np.uint8) for k, v in maps.items()}


def run_to_end(generator: Generator):
    """Exhaust a progress generator and return its return value."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value


# network -> device -> (weights' versions, inference copy); entries go with their networks.
_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def inference_copy(net, device: str):
    """The inference copy of ``net`` on ``device`` (BatchNorm folded; channels-last, the
    layout oneDNN and cuDNN run their fastest convolutions on), made once.

    The copy is kept while ``net`` lives and made again once ``net``'s weights or BatchNorm
    statistics change (every in-place update of a tensor bumps its version counter), so a
    network still in training never gets stale maps.
    """
    import torch

    from equicam.core.model import fold_batchnorm

    versions = tuple(t._version for t in (*net.parameters(), *net.buffers()))
    kept = _COPIES.setdefault(net, {})
    if device not in kept or kept[device][0] != versions:
        copy = fold_batchnorm(net).to(device, memory_format=torch.channels_last)
        kept[device] = (versions, copy)
    return kept[device][1]


def copy_input(x, size: int, device: str):
    """Slices ``(N, C, Y, X)`` as an :func:`inference_copy` takes them: resized to the network's
    ``size`` (:func:`~equicam.core.preprocess.to_input`) on ``device``, channels-last."""
    import torch

    from equicam.core.preprocess import to_input

    return to_input(x.to(device), size).contiguous(memory_format=torch.channels_last)


def _tumour_maps(net, x, method: str, bf16: bool = False):
    """Raw tumour maps ``(N, S, S)`` and tumour probabilities ``(N,)`` for a batch.

    With ``bf16`` the body runs under bfloat16 autocast; the head and every map step after it
    run in float32.
    """
    import torch

    # The gradient of the score at the features only needs the graph from the features up:
    # the body runs without autograd, the head (a 1x1 conv and a mean) with it.
    body = torch.inference_mode() if method == "cam" else torch.no_grad()
    with body, torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        features = net.features(x).float()
    if method == "cam":
        with torch.inference_mode():
            cam = net.head(features)
            probs = torch.softmax(cam.mean(dim=(2, 3)), dim=1)[:, 1]
            return torch.relu(cam[:, 1]), probs
    with torch.enable_grad():
        features.requires_grad_(True)
        cam = net.head(features)
        logits = cam.mean(dim=(2, 3))
        (grads,) = torch.autograd.grad(logits[:, 1].sum(), features)
    features, probs = features.detach(), torch.softmax(logits.detach(), dim=1)[:, 1]
    if method == "gradcam":
        weights = grads.mean(dim=(2, 3), keepdim=True)
    elif method == "gradcampp":
        g2, g3 = grads**2, grads**3
        denominator = 2 * g2 + features.sum(dim=(2, 3), keepdim=True) * g3
        alpha = torch.where(grads != 0, g2 / (denominator + 1e-12), torch.zeros_like(g2))
        weights = (alpha * torch.relu(grads)).sum(dim=(2, 3), keepdim=True)
    else:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    return torch.relu((weights * features).sum(dim=1)), probs


def model_maps(model, images: dict[str, np.ndarray], **options) -> Generator:
    """The progress generator of a model's maps: :func:`cam_volume` for CAM networks, or
    :func:`~equicam.core.segnet.segment_steps` for a second stage (which takes only
    ``slices``, ``device`` and ``batch_size`` of ``options``)."""
    from equicam.core.segnet import SegNet, segment_steps

    if isinstance(model, SegNet):
        kept = {k: v for k, v in options.items() if k in ("slices", "device", "batch_size")}
        return segment_steps(model, images, **kept)
    return cam_volume(model, images, **options)


def cam_volume(
    model,
    images: dict[str, np.ndarray],
    *,
    method: str = "cam",
    slices: Sequence[int] | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    fusions: Sequence[str] = ("mean", "max"),
    precision: str = "auto",
) -> Generator[Progress, None, CamResult]:
    """Compute the maps of a volume, yielding :class:`Progress` after each batch.

    Parameters
    ----------
    model
        A :class:`~equicam.core.model.MultiModalCAM` on any device, left as it is: the
        inference copy of each network on ``device`` (:func:`inference_copy`) runs.
    images
        Modality -> normalised volume ``(Z, Y, X)`` (see :func:`preprocess.normalise_volume`);
        modalities without a network are ignored.
    method
        ``cam``, ``gradcam`` or ``gradcampp``.
    slices
        Slice indices to compute (e.g. the current slice); default every slice with brain.
    device
        A torch device string.
    batch_size
        Slices per forward pass.
    fusions
        Names from :data:`~equicam.core.fusion.FUSION_NAMES`; ``weighted`` uses the
        model's ``fusion_weights`` (equal weights when it has none).
    precision
        ``fp32``, ``bf16`` (the networks' bodies under bfloat16 autocast: 2-3x faster on CPUs
        with native bf16, maps within about 1% of fp32) or ``auto`` (see
        :func:`resolve_precision`).

    Returns
    -------
    CamResult
        The generator's return value.
    """
    import torch

    from equicam.core.preprocess import from_input

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    unknown = [f for f in fusions if f not in FUSION_NAMES]
    if unknown:
        raise ValueError(f"unknown fusions {unknown}; use some of {', '.join(FUSION_NAMES)}")
    bf16 = resolve_precision(precision, device) == "bf16"
    names = [m for m in model.modalities if m in images]
    if not names:
        raise ValueError(
            f"the model has networks for {', '.join(model.modalities)}; none of them was given"
        )
    shape = images[names[0]].shape
    brain = images[names[0]] != 0
    for m in names[1:]:
        brain |= images[m] != 0
    has_brain = brain.any(axis=(1, 2))
    wanted = range(shape[0]) if slices is None else slices
    todo = [z for z in wanted if 0 <= z < shape[0] and has_brain[z]]
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    total = len(batches) * len(names)

    maps = {m: np.zeros(shape, np.float32) for m in names}
    raw_maps = {m: np.zeros(shape, np.float32) for m in names}
    probs = {m: np.zeros(shape[0], np.float32) for m in names}
    done = 0
    yield Progress(done, total, f"{METHOD_NAMES[method]} on {len(todo)} slices")
    for m in names:
        net = inference_copy(model.nets[m], device)
        for batch in batches:
            x = torch.from_numpy(np.ascontiguousarray(images[m][batch], np.float32))
            x = copy_input(x[:, None], model.config.input_size, device)
            raw, p = _tumour_maps(net, x, method, bf16)
            with torch.inference_mode():  # in-place updates of CAM's inference tensors
                # Bilinear resizing of the (non-negative) raw maps keeps them non-negative.
                back = from_input(raw[:, None], shape[1:])[:, 0].flatten(1)
                inside = torch.from_numpy(brain[batch]).to(device)
                raw_maps[m][batch] = (back.view(-1, *shape[1:]) * inside).cpu().numpy()
                low, high = back.amin(dim=1, keepdim=True), back.amax(dim=1, keepdim=True)
                gate = (p > 0.5).float()[:, None] / (high - low).clamp_min(1e-6)
                back = back.sub_(low).mul_(gate).view(-1, *shape[1:])
                # Upsampled maps spill past the skull-stripped brain: nothing is tumour there.
                back.mul_(inside)
            maps[m][batch] = back.cpu().numpy()
            probs[m][batch] = p.cpu().numpy()
            done += 1
            yield Progress(done, total, f"{m}: slices {batch[0]}-{batch[-1]}")
    # Fusions are voxel-wise and zero where every map is: fuse the span of computed slices only.
    span = slice(min(todo), max(todo) + 1) if todo else slice(0, 0)
    fused = {}
    for f in fusions:
        fused[f] = np.zeros(shape, np.float32)
        fused[f][span] = fuse(f, {m: maps[m][span] for m in names}, model.fusion_weights)
    computed = np.zeros(shape[0], bool)
    computed[todo] = True
    return CamResult(method, maps, fused, probs, computed, raw_maps, brain)
