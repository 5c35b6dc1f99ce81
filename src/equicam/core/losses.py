"""The losses of the method (shared/METHOD.md), as pure functions.

Notation: N slices in a batch, a CAM ``(N, 2, H, W)`` per modality (channel 1 = tumour),
logits ``(N, 2)`` = its spatial mean, ``y`` ``(N,)`` slice labels in {0, 1}, ``A`` one
:class:`~equicam.core.transforms.SpatialTransform` per batch. ``C`` is the tumour channel
after ReLU and per-sample min-max normalisation. Teachers (other modalities) are detached,
so the sum of every modality's total gives each network exactly its own gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from equicam.core.model import CAMNet
from equicam.core.transforms import SpatialTransform, apply_transform

TERMS = ("cls", "kl", "er", "cmer")
_EPS = 1e-6


REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the terms, the KL temperature and the CMER reduction.

    A zero weight switches a term off; baseline CAM: ``kl = er = cmer = 0``.
    ``cmer_reduction`` is ``mean`` (as published: the mean over N x H x W, at most 2/(H W) per
    sample) or ``sum`` (the sum over H x W, mean over N: a cosine distance, at most 2).
    """

    cls: float = 1.0
    kl: float = 0.5
    er: float = 1.0
    cmer: float = 1.0
    temperature: float = 10.0
    cmer_reduction: str = "mean"

    def __post_init__(self) -> None:
        if self.cmer_reduction not in REDUCTIONS:
            raise ValueError(
                f"loss.cmer_reduction is {self.cmer_reduction!r}; use one of {REDUCTIONS}"
            )


def normalise_cam(cam: torch.Tensor) -> torch.Tensor:
    """ReLU, then min-max to [0, 1] per sample: ``(N, H, W) -> (N, H, W)``; flat maps give 0."""
    cam = F.relu(cam)
    flat = cam.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1)
    return (cam - low) / (high - low).clamp_min(_EPS)


def classification_loss(
    logits_x: torch.Tensor, logits_ax: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """``1/2 [CE(z(x), y) + CE(z(Ax), y)]``; logits ``(N, 2)``, ``y`` ``(N,)`` -> scalar."""
    return 0.5 * (F.cross_entropy(logits_x, y) + F.cross_entropy(logits_ax, y))


def er_loss(a_cam_x: torch.Tensor, cam_ax: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Within-modality equivariance, ``mean_(n,h,w) y_n (A(C(x)) - C(Ax))^2``.

    Parameters
    ----------
    a_cam_x
        ``(N, H, W)``: A applied to the normalised CAM of x.
    cam_ax
        ``(N, H, W)``: the normalised CAM of Ax.
    y
        ``(N,)`` slice labels; negative slices contribute 0.
    """
    return (y.view(-1, 1, 1).float() * (a_cam_x - cam_ax) ** 2).mean()


def _unit(maps: torch.Tensor) -> torch.Tensor:
    return maps / maps.flatten(1).norm(dim=1).clamp_min(_EPS).view(-1, 1, 1)


def gated_distance(
    p: torch.Tensor, q: torch.Tensor, gate: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """``D(p, q; g) = mean[g (p/||p|| - q/||q||)^2]``, norms over H x W of each map.

    ``p``, ``q`` ``(N, H, W)``; ``gate`` ``(N,)`` in {0, 1} -> scalar. ``reduction="sum"``
    sums over H x W before the mean over N: ``2 - 2 cos(p, q)`` per gated sample.
    """
    squared = gate.view(-1, 1, 1).float() * (_unit(p) - _unit(q)) ** 2
    if reduction == "sum":
        return squared.sum(dim=(1, 2)).mean()
    return squared.mean()


def kl_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 KL(softmax(teacher/T) || softmax(student/T))``, batch mean; teacher detached.

    ``student``, ``teacher`` ``(N, C)`` logits -> scalar.
    """
    log_q = F.log_softmax(student / temperature, dim=1)
    p = F.softmax(teacher.detach() / temperature, dim=1)
    return temperature**2 * F.kl_div(log_q, p, reduction="batchmean")


def method_losses(
    cams_x: dict[str, torch.Tensor],
    cams_ax: dict[str, torch.Tensor],
    y: torch.Tensor,
    t: SpatialTransform,
    weights: LossWeights,
) -> dict[str, dict[str, torch.Tensor]]:
    """Every term and the total of each modality's loss ``L_m``.

    Parameters
    ----------
    cams_x
        Modality -> raw CAM of x, ``(N, 2, H, W)``.
    cams_ax
        Modality -> raw CAM of Ax, ``(N, 2, H', W')``.
    y
        ``(N,)`` slice labels (long).
    t
        The transform A that made Ax from x.
    weights
        Term weights and temperature.

    Returns
    -------
    dict
        Modality -> {"cls", "kl", "er", "cmer", "total"} float32 scalars. Terms with zero
        weight are not computed and reported as 0.
    """
    names = list(cams_x)
    # Losses in float32 even when the CAMs come from bf16/fp16 autocast: min-max
    # normalisation and small squared differences lose too much in 8 mantissa bits.
    cams_x = {m: cams_x[m].float() for m in names}
    cams_ax = {m: cams_ax[m].float() for m in names}
    logits_x = {m: CAMNet.logits(cams_x[m]) for m in names}
    logits_ax = {m: CAMNet.logits(cams_ax[m]) for m in names}
    need_maps = weights.er or weights.cmer
    if need_maps:
        c_ax = {m: normalise_cam(cams_ax[m][:, 1]) for m in names}
        a_c_x = {
            m: apply_transform(normalise_cam(cams_x[m][:, 1])[:, None], t)[:, 0] for m in names
        }
    zero = cams_x[names[0]].new_zeros(())
    others = len(names) - 1
    out = {}
    for m in names:
        terms = dict.fromkeys(TERMS, zero)
        terms["cls"] = classification_loss(logits_x[m], logits_ax[m], y)
        if weights.er:
            terms["er"] = er_loss(a_c_x[m], c_ax[m], y)
        if others and weights.kl:
            total = sum(
                kl_loss(logits_x[m], logits_x[j], weights.temperature)
                + kl_loss(logits_ax[m], logits_ax[j], weights.temperature)
                for j in names
                if j != m
            )
            terms["kl"] = 0.5 * total / others
        if others and weights.cmer:
            total = zero
            for j in (j for j in names if j != m):
                gate_ax = y * (logits_ax[j].argmax(dim=1) == 1)
                gate_x = y * (logits_x[j].argmax(dim=1) == 1)
                reduction = weights.cmer_reduction
                term1 = gated_distance(a_c_x[m], c_ax[j].detach(), gate_ax, reduction)
                term2 = gated_distance(c_ax[m], a_c_x[j].detach(), gate_x, reduction)
                total = total + 0.5 * (term1 + term2)
            terms["cmer"] = total / others
        terms["total"] = (
            weights.cls * terms["cls"]
            + weights.kl * terms["kl"]
            + weights.er * terms["er"]
            + weights.cmer * terms["cmer"]
        )
        out[m] = terms
    return out
