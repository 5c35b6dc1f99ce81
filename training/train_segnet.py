"""Train the second stage on pseudo-masks of the training patients.

    python -m training.train_segnet --cache CACHE --cam CKPT --out DIR [--steps N] [...]

The CAM checkpoint ``CKPT`` (with calibrated ``refined`` or ``guided`` settings, see
``training.calibrate``) makes a pseudo-mask of one map (``--map``, default the fused mean) under
one protocol (``--protocol``) for every training patient of the slice cache; no pixel label of a
training patient is read. With ``refined`` the network learns the mask before growth, each voxel
weighted by the map's confidence, the band that growth adds ignored
(:func:`~equicam.core.segnet.pseudo_targets`); with ``guided``, the guided mask, its outer edge
ignored. ``CKPT`` may instead be a second stage (a second round): its masks, their outer edge
ignored, are then learnt (:func:`teacher_labelled`). ``--slice-labels`` corrects the
pseudo-masks by the slice labels the CAM networks learnt from, and ``--slice-loss W`` adds a
multiple-instance loss of the tumour slices' labels. ``--augment P`` changes the look of the
inputs at random. Its threshold and input sizes are then chosen on the validation patients'
pixel labels, as the CAM models' thresholds are (``python -m training.calibrate`` chooses them
again for an existing second stage). Writes
``DIR/segnet.safetensors`` and ``DIR/losses.json``; never overwrites a file it did not write.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from equicam.core.augment import IntensityAugment
from equicam.core.inference import cam_volume, run_to_end
from equicam.core.mask_edit import grow
from equicam.core.refine import (
    THRESHOLD_ONLY,
    MaskSettings,
    refined_maps,
    refined_mask,
    refinement_of,
)
from equicam.core.segnet import (
    MAP,
    SegConfig,
    SegNet,
    pseudo_targets,
    save_segnet,
    segment_volume,
    with_context,
    with_slice_labels,
)
from equicam.core.segnet_fit import best_setting, training_losses
from training.data import SliceCache

# the edge of a guided pseudo-mask that the second stage neither learns as tumour nor as healthy
GUIDED_BAND_MM = 2.0


def pseudo_labelled(
    cam_model,
    cam_meta: dict,
    data: SliceCache,
    name: str,
    context: int,
    device: str,
    protocol: str = "refined",
    log: Callable[[str], None] = lambda _: None,
    slice_labels: bool = False,
):
    """Slices with context, targets and weights of a split, from the CAM model's pseudo-masks.

    ``refined``: the target is the map's mask before growth, each voxel weighted by the map's
    confidence, the band that growth adds ignored. ``guided``: the target is the guided mask
    (the bright regions of the guide sequence that the map touches), every voxel weighing 1
    but those within :data:`GUIDED_BAND_MM` outside it (where the scan and the tumour's edge
    may disagree), which are ignored. ``slice_labels``: correct them by the slice labels
    (:func:`~equicam.core.segnet.with_slice_labels`).

    Returns
    -------
    (inputs, targets, weights)
        ``(N, C, S, S)`` float32, ``(N, S, S)`` uint8 and float32 at the cache's size, where
        ``C`` is every sequence at ``2 context + 1`` slices.

    ``log`` receives a line per patient.
    """
    refinement = refinement_of(cam_meta, protocol=protocol)
    settings = refinement.mask_settings(name)
    before_growth = MaskSettings(
        settings.threshold, settings.largest_only, settings.min_component_mm3
    )

    def of_case(case_id: str, volume: dict) -> tuple[np.ndarray, np.ndarray]:
        spacing = data.case_spacing(case_id)
        fusions = ("mean", "max", "geometric", "weighted")
        result = run_to_end(cam_volume(cam_model, volume, device=device, fusions=fusions))
        confidence = refined_maps(result, spacing[0], refinement, cam_model.fusion_weights)[name]
        if protocol == "guided":
            core = refined_mask(confidence, result.brain, spacing, settings, volume)
            mask = grow(core, spacing, GUIDED_BAND_MM)
            confidence = np.ones_like(confidence)
        else:
            mask = refined_mask(confidence, result.brain, spacing, settings)
            core = refined_mask(confidence, result.brain, spacing, before_growth)
        return pseudo_targets(mask, core, confidence)

    return _labelled(data, context, of_case, log, slice_labels)


def _labelled(
    data: SliceCache,
    context: int,
    of_case: Callable[[str, dict], tuple[np.ndarray, np.ndarray]],
    log: Callable[[str], None],
    slice_labels: bool,
):
    """Every training patient's slices with context, and ``of_case(case_id, volume)``'s targets
    and weights, corrected by the slice labels when ``slice_labels``; concatenated."""
    inputs, targets, weights = [], [], []
    for n, case_id in enumerate(data.case_ids, 1):
        log(f"pseudo-masks {n}/{len(data.case_ids)}: {case_id}")
        images, _ = data.case_slices(case_id)  # pixel labels of training patients: unused
        volume = {m: images[:, i] for i, m in enumerate(data.modalities)}
        target, weight = of_case(case_id, volume)
        if slice_labels:
            target, weight = with_slice_labels(target, weight, data.case_labels(case_id))
        inputs.append(with_context(images, context))
        targets.append(target)
        weights.append(weight)
    return np.concatenate(inputs), np.concatenate(targets), np.concatenate(weights)


def teacher_labelled(
    teacher: SegNet,
    threshold: float,
    data: SliceCache,
    context: int,
    device: str,
    log: Callable[[str], None] = lambda _: None,
    slice_labels: bool = False,
):
    """Slices with context, targets and weights of a split, from a second stage's masks.

    The target is the teacher's probability at ``threshold``, every voxel weighing 1 but those
    within :data:`GUIDED_BAND_MM` outside the mask, which are ignored; ``slice_labels`` as in
    :func:`pseudo_labelled`. Returns ``(inputs, targets, weights)`` as it does.
    """

    def of_case(case_id: str, volume: dict) -> tuple[np.ndarray, np.ndarray]:
        mask = segment_volume(teacher, volume, device=device) >= threshold
        band = grow(mask, data.case_spacing(case_id), GUIDED_BAND_MM) & ~mask
        return mask.astype(np.uint8), (~band).astype(np.float32)

    return _labelled(data, context, of_case, log, slice_labels)


def train_steps(
    model: SegNet,
    inputs,
    targets,
    weights,
    log: Callable[[str], None] = lambda _: None,
    log_every: int = 100,
    **options,
) -> list[float]:
    """Train ``model`` (see :func:`~equicam.core.segnet_fit.training_losses`, which takes
    ``options``); returns the loss of every step. ``log`` receives their mean every
    ``log_every`` steps."""
    losses = []
    for loss in training_losses(model, inputs, targets, weights, **options):
        losses.append(loss)
        if len(losses) % log_every == 0:
            log(f"step {len(losses)}: loss {np.mean(losses[-log_every:]):.4f}")
    return losses


def choose_setting(model: SegNet, splits: Sequence[SliceCache], device: str) -> dict:
    """The input sizes and threshold with the best mean Dice on the tumour patients of
    ``splits`` (:func:`~equicam.core.segnet_fit.best_setting`, which sets them on ``model``)."""
    cases = []
    for data in splits:
        for case_id in data.case_ids:
            images, truth = data.case_slices(case_id)
            volume = {m: images[:, i] for i, m in enumerate(data.modalities)}
            cases.append((volume, truth > 0))
    return best_setting(model, cases, device)


def main(argv=None) -> Path:
    """Command line; returns the checkpoint written."""
    from equicam.core.checkpoint import load_model
    from equicam.core.device import resolve_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, help="slice cache of `equicam prepare`")
    parser.add_argument(
        "--cam",
        required=True,
        help="CAM checkpoint with refined settings, or a second stage whose masks are learnt",
    )
    parser.add_argument("--out", required=True, type=Path, help="new output folder")
    parser.add_argument("--map", default="fused_mean", help="map whose pseudo-masks are learnt")
    parser.add_argument(
        "--protocol",
        choices=("refined", "guided"),
        default="refined",
        help="protocol of the pseudo-masks (its settings must be in the CAM checkpoint)",
    )
    parser.add_argument(
        "--augment",
        type=float,
        default=0.0,
        help="probability of each intensity change per input channel (0: none)",
    )
    parser.add_argument(
        "--slice-labels",
        action="store_true",
        help="healthy slices (by their labels) learnt as healthy throughout; tumour slices "
        "with an empty pseudo-mask left out",
    )
    parser.add_argument(
        "--slice-loss",
        type=float,
        default=0.0,
        help="weight of the slice labels' multiple-instance loss (0: none)",
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--context", type=int, default=1, help="neighbouring slices each side")
    parser.add_argument("--widths", default="16,32,64,64", help="four encoder widths")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    target = args.out / "segnet.safetensors"
    if target.exists():
        parser.error(f"{target} exists; choose a new --out folder")
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    cam_model, cam_meta = load_model(args.cam, device=device)
    config = SegConfig(
        modalities=cam_model.modalities,
        context=args.context,
        widths=tuple(int(w) for w in args.widths.split(",")),
        input_size=args.input_size,
    )
    train = SliceCache(args.cache, "train", config.modalities)
    train.check_preprocessing(cam_meta, args.cam)

    def log(line: str) -> None:
        print(line, flush=True)

    second_round = isinstance(cam_model, SegNet)
    if second_round:
        inputs, targets, weights = teacher_labelled(
            cam_model, cam_meta["threshold"], train, config.context, device, log, args.slice_labels
        )
    else:
        inputs, targets, weights = pseudo_labelled(
            cam_model,
            cam_meta,
            train,
            args.map,
            config.context,
            device,
            args.protocol,
            log,
            args.slice_labels,
        )
    model = SegNet(config)
    losses = train_steps(
        model,
        inputs,
        targets,
        weights,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=device,
        augment=IntensityAugment(p=args.augment) if args.augment > 0 else None,
        labels=np.concatenate([train.case_labels(c) for c in train.case_ids]),
        slice_weight=args.slice_loss,
        log=log,
    )
    chosen = choose_setting(model, [SliceCache(args.cache, "val", config.modalities)], device)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "threshold": chosen["threshold"],
        "val_dice": chosen["dice"],
        "bias_correction": train.bias_correction,
        "trained_on": {
            "cache": str(args.cache),
            "cam_checkpoint": str(args.cam),
            "map": MAP if second_round else args.map,
            "protocol": THRESHOLD_ONLY if second_round else args.protocol,
            "augment": args.augment,
            "slice_labels": args.slice_labels,
            "slice_loss": args.slice_loss,
            "train_cases": len(train.case_ids),
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
        },
        "final_loss": float(np.mean(losses[-10:])),
    }
    path = save_segnet(target, model.cpu(), meta)
    (args.out / "losses.json").write_text(json.dumps(losses))
    print(
        f"wrote {path}: input sizes {list(chosen['input_sizes'])}, threshold "
        f"{chosen['threshold']}, val Dice {chosen['dice']}"
    )
    return path


if __name__ == "__main__":
    from equicam.cli import run_module

    sys.exit(run_module("training.train_segnet", main))
