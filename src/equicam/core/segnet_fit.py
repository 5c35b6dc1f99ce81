"""Fitting a second stage (:mod:`equicam.core.segnet`): its loss, its training loop, its
threshold and input sizes, and fine-tuning it on masks that a radiologist corrected.

The training loop is a generator of losses, so that a command runs it to the end and the
plugin runs it in a thread worker with progress and Cancel; ``training.train_segnet`` and
``training.finetune_segnet`` (and the plugin's button) share it.

Fine-tuning (:func:`fine_tune`) learns each corrected case's mask as a full label, every
voxel weighing 1 (a correction is no pseudo-label), then chooses the threshold and input
sizes again on those cases, and writes a new checkpoint: never over an existing file (the one
it starts from included), never inside the installed package (its bundled checkpoints and
sample case).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from equicam.core.augment import IntensityAugment, augment_intensity
from equicam.core.checkpoint import BUNDLED_DIR, MAX_INPUT_SIZE, CheckpointError
from equicam.core.evaluation import SWEEP
from equicam.core.inference import Progress
from equicam.core.metrics import dice
from equicam.core.preprocess import to_input
from equicam.core.segnet import SegNet, load_segnet, save_segnet, segment_volume, with_context

# A second stage's grid reaches below the CAMs' sweep: learnt with slice labels, one chose the
# sweep's floor (0.2) on validation and did better still at 0.1.
THRESHOLDS = tuple(sorted({0.05, 0.1, 0.15, *(float(t) for t in SWEEP)}))
# Zooms of the training size that a second stage may also run at, probabilities averaged
# (best_setting): learnt mostly from large tumours, it misses small lesions at its training
# size and finds many of them when they cover 4/3 as many pixels across.
ZOOMS = (1.0, 4 / 3, 5 / 3)

# the installed package, and the sample data it links to (bundled checkpoints, sample case)
PROTECTED = (Path(__file__).resolve().parent.parent, BUNDLED_DIR.resolve().parent)


def weighted_loss(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The voxel-weighted cross-entropy of a batch: logits ``(N, 2, S, S)``, targets and weights
    ``(N, S, S)`` (weights 0 ignore a voxel)."""
    per_voxel = F.cross_entropy(logits, y, reduction="none")
    return (per_voxel * w).sum() / w.sum().clamp_min(1.0)


def slice_loss(logits: torch.Tensor, labels: torch.Tensor, pixels: int) -> torch.Tensor:
    """Multiple-instance loss of slice labels on per-pixel logits.

    A slice's score is the mean tumour margin (logit 1 minus logit 0) of its ``pixels``
    highest pixels: a tumour slice must hold some tumour pixels, a healthy one none. It teaches
    the slice labels the CAM networks learnt from where no pseudo-mask says where the tumour is.

    Parameters
    ----------
    logits
        ``(N, 2, S, S)`` per-pixel logits.
    labels
        ``(N,)`` slice labels in {0, 1}.
    pixels
        How many of the highest pixels make a slice's score.

    Returns
    -------
    torch.Tensor
        Scalar binary cross-entropy of the scores against the labels.
    """
    margin = (logits[:, 1] - logits[:, 0]).flatten(1)
    score = margin.topk(min(pixels, margin.shape[1]), dim=1).values.mean(dim=1)
    return F.binary_cross_entropy_with_logits(score, labels.float())


def training_losses(
    model: SegNet,
    inputs: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    *,
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    augment: IntensityAugment | None = None,
    labels: np.ndarray | None = None,
    slice_weight: float = 0.0,
    slice_pixels: int = 8,
) -> Iterator[float]:
    """Train ``model`` for ``steps`` batches of random slices with random flips, yielding the
    loss (:func:`weighted_loss`) after each step (stop iterating to stop training).

    With slice ``labels`` ``(N,)`` and ``slice_weight`` above 0, the loss adds that weight
    times :func:`slice_loss` over ``slice_pixels`` pixels of the batch's tumour slices: each
    must hold some tumour, where a pseudo-mask may have missed it (what a healthy slice holds is
    the targets' to say).

    ``augment`` changes the look of every input channel at random
    (:func:`~equicam.core.augment.augment_intensity`), as the CAM networks' training does, so
    that the network cannot lean on one scanner's contrast."""
    size = model.config.input_size
    x_all = to_input(torch.from_numpy(inputs), size)
    y_all = to_input(torch.from_numpy(targets[:, None].astype(np.float32)), size, nearest=True)
    w_all = to_input(torch.from_numpy(weights[:, None]), size, nearest=True)
    l_all = None  # slice labels, when the slice loss is on
    if labels is not None and slice_weight > 0:
        l_all = torch.as_tensor(np.asarray(labels))
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.to(device).train()
    for _ in range(steps):
        pick = torch.randint(len(x_all), (batch_size,), generator=generator)
        x, y, w = x_all[pick], y_all[pick, 0].long(), w_all[pick, 0]
        if torch.rand(1, generator=generator) < 0.5:  # left-right flip: brains are symmetric
            x, y, w = x.flip(-1), y.flip(-1), w.flip(-1)
        if augment is not None:
            x = augment_intensity(x, generator, augment)
        x, y, w = x.to(device), y.to(device), w.to(device)
        logits = model(x)
        loss = weighted_loss(logits, y, w)
        tumour = (l_all[pick] == 1).to(device) if l_all is not None else None
        if tumour is not None and tumour.any():
            positives = torch.ones(int(tumour.sum()), device=device)
            loss = loss + slice_weight * slice_loss(logits[tumour], positives, slice_pixels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        yield float(loss.detach())


def size_choices(size: int) -> list[tuple[int, ...]]:
    """The input-size sets :func:`best_setting` weighs for a network trained at ``size``: the
    training size alone, then with each further zoom of :data:`ZOOMS` (multiples of 8)."""
    sizes = [min(MAX_INPUT_SIZE, max(16, round(size * zoom / 8) * 8)) for zoom in ZOOMS]
    return [tuple(sizes[:n]) for n in range(1, len(sizes) + 1)]


def best_setting(model: SegNet, cases, device: str) -> dict:
    """The input sizes (:func:`size_choices`) and the threshold (:data:`THRESHOLDS`) with the
    best mean Dice of ``model`` over the tumour patients of ``cases`` (``(volume, truth)``:
    modality -> normalised volume, tumour mask); sets ``model.input_sizes`` to those sizes.

    Returns ``{"input_sizes", "threshold", "dice"}``: the training size, 0.5 and None when no
    case has tumour. Ties go to fewer sizes, then to the lower threshold.
    """
    cases = [(volume, truth) for volume, truth in cases if truth.any()]
    choices = size_choices(model.config.input_size)
    best = {"input_sizes": choices[0], "threshold": 0.5, "dice": None}
    if cases:
        probabilities = {}  # size -> each case's probability at that size alone
        for size in choices[-1]:
            model.input_sizes = (size,)
            probabilities[size] = [segment_volume(model, v, device=device) for v, _ in cases]
        for sizes in choices:
            mean = [
                np.mean([probabilities[s][i] for s in sizes], axis=0) for i in range(len(cases))
            ]
            for t in THRESHOLDS:
                score = float(
                    np.mean([dice(p >= t, c[1]) for p, c in zip(mean, cases, strict=True)])
                )
                if best["dice"] is None or score > best["dice"]:
                    best = {"input_sizes": sizes, "threshold": t, "dice": score}
    model.input_sizes = best["input_sizes"]
    return best


def corrected_inputs(
    cases: Sequence[tuple[dict[str, np.ndarray], np.ndarray]], context: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slices with context, targets and weights (all 1) of corrected cases.

    ``cases``: ``(volume, mask)`` pairs, modality -> normalised volume ``(Z, Y, X)`` in the
    model's order, and the corrected mask (non-zero = tumour).
    """
    inputs, targets = [], []
    for volume, mask in cases:
        stacked = np.stack(list(volume.values()), axis=1).astype(np.float32)
        inputs.append(with_context(stacked, context))
        targets.append((np.asarray(mask) > 0).astype(np.uint8))
    targets = np.concatenate(targets)
    return np.concatenate(inputs), targets, np.ones(targets.shape, np.float32)


def mean_loss(model: SegNet, cases, device: str = "cpu", batch_size: int = 16) -> float:
    """The :func:`weighted_loss` of ``model`` over every slice of corrected ``cases`` (see
    :func:`corrected_inputs`), without training."""
    inputs, targets, weights = corrected_inputs(cases, model.config.context)
    size = model.config.input_size
    model.to(device).eval()
    total, count = 0.0, 0.0
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            part = slice(start, start + batch_size)
            x = to_input(torch.from_numpy(inputs[part]), size).to(device)
            y = to_input(
                torch.from_numpy(targets[part, None].astype(np.float32)), size, nearest=True
            )
            w = to_input(torch.from_numpy(weights[part, None]), size, nearest=True)
            y, w = y[:, 0].long().to(device), w[:, 0].to(device)
            per_voxel = F.cross_entropy(model(x), y, reduction="none")
            total += float((per_voxel * w).sum())
            count += float(w.sum())
    return total / max(count, 1.0)


def check_new_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself when a new checkpoint may be written there; else CheckpointError."""
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        raise CheckpointError(path, "a checkpoint's name must end in .safetensors")
    if path.exists():
        raise CheckpointError(path, "exists; fine-tuning writes a new file, choose another name")
    if any(path.resolve().is_relative_to(root) for root in PROTECTED):
        raise CheckpointError(
            path, "lies inside the installed package or its sample data; choose another folder"
        )
    if not path.parent.is_dir():
        raise CheckpointError(path, "its folder does not exist")
    return path


def fine_tune(
    segnet: str | os.PathLike,
    cases: Sequence[tuple[dict[str, np.ndarray], np.ndarray]],
    out: str | os.PathLike,
    *,
    steps: int = 200,
    batch_size: int = 8,
    lr: float = 2e-4,
    seed: int = 0,
    device: str = "cpu",
    sources: Sequence[str] = (),
) -> Generator[Progress, None, dict]:
    """Fine-tune the second stage in ``segnet`` on corrected cases, yielding progress.

    Parameters
    ----------
    segnet
        The second-stage checkpoint to start from (left as it is).
    cases
        ``(volume, mask)`` pairs (see :func:`corrected_inputs`), volumes in the model's order.
    out
        The new checkpoint (see :func:`check_new_checkpoint`); written only at the end, so a
        run stopped early writes nothing.
    steps, batch_size, lr, seed
        Of the training loop (:func:`training_losses`).
    device
        A torch device string.
    sources
        What the cases are (the saved masks' paths), recorded in the checkpoint.

    Returns
    -------
    dict
        The generator's return value: ``path``, ``losses`` (every step's), ``loss_before`` and
        ``loss_after`` (:func:`mean_loss` over the cases), ``input_sizes``, ``threshold`` and
        ``dice``.
    """
    out = check_new_checkpoint(out)
    if not cases:
        raise ValueError("no corrected case to learn from")
    model, meta = load_segnet(segnet, device)
    inputs, targets, weights = corrected_inputs(cases, model.config.context)
    yield Progress(0, steps, f"fine-tuning on {len(cases)} corrected cases")
    before = mean_loss(model, cases, device)
    losses = []
    run = training_losses(
        model,
        inputs,
        targets,
        weights,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
    )
    for step, loss in enumerate(run, 1):
        losses.append(loss)
        yield Progress(step, steps, f"fine-tuning: step {step}, loss {loss:.3f}")
    after = mean_loss(model, cases, device)
    chosen = best_setting(model, cases, device)
    tuned = {
        **meta,
        "threshold": chosen["threshold"],
        "val_dice": chosen["dice"],
        "fine_tuned": {
            "from": str(segnet),
            "cases": list(sources) or len(cases),
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "loss_before": before,
            "loss_after": after,
            "threshold_dice_on": "the corrected cases",
        },
    }
    path = save_segnet(out, model.cpu(), tuned)
    return {"path": path, "losses": losses, "loss_before": before, "loss_after": after, **chosen}
