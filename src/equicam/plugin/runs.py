"""The CAM inspector's runs (no Qt): results merged slice by slice, maps and masks under a
post-processing protocol (:mod:`equicam.core.refine`).

Runs of one model on the same scans add up: a current-slice run fills one slice of the run's
result, a whole-volume run every slice. The ``refined`` and ``guided`` protocols need the
whole volume (their gate is smoothed along z, their maps normalised over the volume), so until
the whole volume has been run a run's maps are shown under ``paper``, and the widget says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from equicam.core.checkpoint import SECOND_STAGE
from equicam.core.evaluation import chosen_thresholds
from equicam.core.inference import CamResult
from equicam.core.refine import (
    THRESHOLD_ONLY,
    MaskSettings,
    default_protocol,
    refined_maps,
    refined_mask,
    refinement_of,
)
from equicam.plugin.cam_layers import pseudo_mask

CHECKPOINTS_CHOICE = "checkpoint"  # the protocol choice that defers to the checkpoint
WHOLE_VOLUME = ("refined", "guided")  # protocols that need every slice


@dataclass
class Run:
    """One run's merged result and what is needed to show it.

    Attributes
    ----------
    key
        The scans it was computed on (modality and layer data identity) and whether they
        were bias-corrected.
    result
        Every slice computed so far.
    scale
        Voxel size in mm, display order (the scan layer's scale).
    metadata
        The scan layer's metadata (geometry, case).
    meta
        The checkpoint's metadata.
    images
        The normalised scans it ran on (the ``guided`` protocol's guide sequence).
    """

    key: tuple
    result: CamResult
    scale: Sequence[float]
    metadata: dict
    meta: dict
    images: Mapping[str, np.ndarray]


def merged(previous: CamResult | None, new: CamResult) -> CamResult:
    """``new``'s computed slices written into ``previous`` (None: ``new`` itself).

    ``previous``'s arrays are updated in place: a click costs its slice, not a copy of every
    volume. Maps that ``new`` lacks (another fusion, a modality left out) are dropped.
    """
    if previous is None or previous.brain.shape != new.brain.shape:
        return new
    take = new.computed

    def over(old: Mapping, fresh: Mapping) -> dict:
        out = {}
        for name, values in fresh.items():
            if name in old:
                old[name][take] = values[take]
            out[name] = old.get(name, values)  # a new map is zero where it was not computed
        return out

    return CamResult(
        new.method,
        over(previous.maps, new.maps),
        over(previous.fused, new.fused),
        over(previous.slice_prob, new.slice_prob),
        previous.computed | new.computed,
        over(previous.raw, new.raw),
        new.brain,
    )


def complete(result: CamResult) -> bool:
    """Whether every slice with brain has been computed."""
    return bool(result.computed[result.brain.any(axis=(1, 2))].all())


def protocol_for(choice: str, meta: Mapping) -> tuple[str, str]:
    """The protocol a checkpoint's runs are shown under, and why it is not ``choice``.

    ``choice`` is ``checkpoint`` (the checkpoint's recommendation), ``paper``, ``refined`` or
    ``guided``; a checkpoint without the chosen protocol's settings is shown under ``paper``,
    a second stage under :data:`~equicam.core.refine.THRESHOLD_ONLY`.
    """
    if meta.get("kind") == SECOND_STAGE:
        return THRESHOLD_ONLY, ""
    protocol = default_protocol(meta) if choice == CHECKPOINTS_CHOICE else choice
    if protocol != "paper" and protocol not in meta:
        return "paper", f"this checkpoint has no {protocol} calibration"
    return protocol, ""


def shown_maps(run: Run, protocol: str) -> tuple[dict, dict, str, str]:
    """The maps of a run under ``protocol``, with each map's mask settings.

    Returns
    -------
    (maps, settings, protocol, note)
        Map name -> float32 map; map name -> mask settings (``threshold``, and for ``refined``
        and ``guided`` the rest of :class:`~equicam.core.refine.MaskSettings`); the protocol
        applied, and why it is not ``protocol`` (empty when it is).
    """
    note = ""
    if protocol in WHOLE_VOLUME and not complete(run.result):
        protocol, note = "paper", f"{protocol} needs the whole volume: run it"
    if protocol in WHOLE_VOLUME:
        refinement = refinement_of(run.meta, protocol=protocol)
        missing = [name for name in run.result.all_maps() if name not in (refinement.maps or {})]
        if missing:
            protocol, note = "paper", f"no {protocol} settings for {', '.join(missing)}"
    if protocol in WHOLE_VOLUME:
        maps = refined_maps(
            run.result, float(run.scale[0]), refinement, run.meta.get("fusion_weights")
        )
        settings = {name: refinement.mask_settings(name).to_dict() for name in maps}
        return maps, settings, protocol, note
    maps = run.result.all_maps()
    thresholds = chosen_thresholds(run.meta, None, maps)
    return maps, {name: {"threshold": t} for name, t in thresholds.items()}, protocol, note


def layer_mask(
    volume: np.ndarray,
    settings: Mapping,
    threshold: float,
    brain: np.ndarray,
    spacing: Sequence[float],
    images: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """A map's uint8 mask at ``threshold``, with its refined or guided steps when ``settings``
    has them (``images``: the normalised scans, for a guide sequence)."""
    if "grow_mm" not in settings:  # paper: the threshold alone
        return pseudo_mask(volume, threshold)
    mask_settings = MaskSettings(**{**settings, "threshold": float(threshold)})
    return refined_mask(volume, brain, spacing, mask_settings, images).astype(np.uint8)
