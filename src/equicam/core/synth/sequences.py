"""MR sequences: the signal equations and the per-case draw of their parameters.

Signal of a tissue with proton density PD and relaxation times T1, T2 (``E1 = exp(-TR/T1)``):

- spin echo / turbo spin echo (2-D T1 and T2):  ``PD (1 - E1) exp(-TE/T2)``
- inversion recovery (FLAIR): ``PD |1 - 2 exp(-TI/T1) + E1| exp(-TE/T2)``
- spoiled gradient echo (3-D T1, also the first approximation of MPRAGE):
  ``PD sin(a) (1 - E1) / (1 - cos(a) E1) exp(-TE/T2*)``, with T2* taken as T2 (TE of 2-5 ms
  makes the factor nearly 1 for every tissue).

The FLAIR inversion time nulls the CSF drawn for the case: ``TI = T1_csf ln(2 / (1 + E1))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from equicam.core.synth.tissue import Tissue, post_contrast_t1

KINDS = ("se", "spgr", "flair")


@dataclass(frozen=True)
class Recipe:
    """How one family acquires one sequence: ranges that each case draws from.

    Attributes
    ----------
    kind
        ``se``, ``spgr`` or ``flair`` (inversion recovery with TI nulling CSF).
    tr, te
        Repetition and echo time ranges, ms.
    thickness
        Slice thickness range, mm (about 1 for 3-D acquisitions).
    snr
        Mean and sd of the signal-to-noise ratio of the mean brain signal.
    flip
        Flip angle range, degrees (``spgr`` only).
    source
        Where the ranges come from.
    """

    kind: str
    tr: tuple[float, float]
    te: tuple[float, float]
    thickness: tuple[float, float]
    snr: tuple[float, float]
    flip: tuple[float, float] = (90.0, 90.0)
    source: str = ""


@dataclass(frozen=True)
class Protocol:
    """One sequence's parameters in one case (times in ms, angle in degrees, mm)."""

    kind: str
    tr: float
    te: float
    ti: float
    flip: float
    thickness: float
    snr: float
    contrast: bool


def draw_protocol(
    rng: np.random.Generator, recipe: Recipe, *, csf_t1: float, contrast: bool, snr_scale: float
) -> Protocol:
    """Draw one sequence's parameters from ``recipe``.

    Parameters
    ----------
    rng
        Random generator.
    recipe
        The family's ranges for this sequence.
    csf_t1
        The case's CSF T1, ms: the FLAIR inversion time nulls it.
    contrast
        True for the post-gadolinium sequence (T1ce).
    snr_scale
        Multiplies the recipe's SNR (field strength).
    """
    tr = float(rng.uniform(*recipe.tr))
    ti = 0.0
    if recipe.kind == "flair":
        ti = csf_t1 * float(np.log(2.0 / (1.0 + np.exp(-tr / csf_t1))))
    snr = max(5.0, float(rng.normal(*recipe.snr)) * snr_scale)
    return Protocol(
        kind=recipe.kind,
        tr=tr,
        te=float(rng.uniform(*recipe.te)),
        ti=ti,
        flip=float(rng.uniform(*recipe.flip)),
        thickness=float(rng.uniform(*recipe.thickness)),
        snr=snr,
        contrast=contrast,
    )


def signal(protocol: Protocol, tissue: Tissue, r1: float) -> float:
    """Noise-free signal of ``tissue`` under ``protocol`` (gadolinium with relaxivity ``r1``)."""
    t1 = post_contrast_t1(tissue, r1) if protocol.contrast else tissue.t1
    e1 = np.exp(-protocol.tr / t1)
    decay = np.exp(-protocol.te / tissue.t2)
    if protocol.kind == "se":
        value = (1.0 - e1) * decay
    elif protocol.kind == "flair":
        value = abs(1.0 - 2.0 * np.exp(-protocol.ti / t1) + e1) * decay
    elif protocol.kind == "spgr":
        a = np.deg2rad(protocol.flip)
        value = np.sin(a) * (1.0 - e1) / (1.0 - np.cos(a) * e1) * decay
    else:
        raise ValueError(f"unknown sequence kind {protocol.kind!r}; use one of {KINDS}")
    return float(tissue.pd * value)
