"""Post-processing protocols: from a volume's CAMs to its maps and pseudo-masks.

Three named protocols, recorded with every result:

``paper``
    The method's evaluation protocol, unchanged: per-slice ReLU and min-max, classifier gating
    (a slice called healthy gets an all-zero map), one threshold per map.
``refined``
    Ours. Each modality's raw map (ReLU, resized, zero outside the brain) is kept on the slices
    whose tumour probability, smoothed along z with a Gaussian of ``z_sigma_mm``, reaches
    ``gate``, and divided by its maximum over the volume (per-volume rather than per-slice
    normalisation: a slice's weak response stays weak). Fusions combine these maps as in the
    paper protocol. A map's mask is then its threshold, connected components filtered (only
    the largest, or those of at least ``min_component_mm3``), grown by ``grow_mm`` inside the
    brain.
``guided``
    Ours. Maps made as ``refined`` makes them, under a slice gate of its own (calibrated for
    these masks, not for the refined ones); a map's threshold gives the seed (with
    ``strongest_only``, only its connected component that holds the map's highest value), and
    the mask is every connected region of one sequence's bright voxels (z-score within the
    brain of at least ``guide_z``, on ``guide``, FLAIR for instance) that the seed touches: the
    CAM says where the tumour is, the scan where it ends. It needs the case's normalised scans.

Every setting of ``refined`` and ``guided`` is chosen on validation patients
(``training.calibrate``) and kept in the checkpoint metadata under the protocol's name::

    {"z_sigma_mm": float, "gate": float,
     "maps": {name: {"threshold", "largest_only", "min_component_mm3", "grow_mm",
                     "guide", "guide_z", "guide_reach_mm", "strongest_only"}}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import ndimage

from equicam.core.fusion import fuse
from equicam.core.mask_edit import (
    distance_to,
    grow,
    largest_component,
    remove_small_components,
    strongest_component,
)

PROTOCOLS = ("paper", "refined", "guided")
# A second stage (:mod:`equicam.core.segnet`) has no protocol to choose: its mask is its
# probability at its threshold, recorded under this name.
THRESHOLD_ONLY = "threshold"


@dataclass(frozen=True)
class MaskSettings:
    """How one map of the ``refined`` or ``guided`` protocol becomes a mask.

    ``guide`` (a sequence name; empty for ``refined``) and ``guide_z`` replace the component
    filter and growth by the bright regions of that sequence that the thresholded map touches,
    cut at ``guide_reach_mm`` from it when that is above 0 (a bright region can run far along
    the cortex or a rim the skull stripping left). With ``strongest_only`` the thresholded map
    keeps only its component that holds the map's highest value before it touches anything:
    one lesion, the most confident, rather than every bright spot the map passes the
    threshold on (a small tumour's mask is otherwise mostly such false positives).
    """

    threshold: float = 0.5
    largest_only: bool = False
    min_component_mm3: float = 0.0
    grow_mm: float = 0.0
    guide: str = ""
    guide_z: float = 0.0
    guide_reach_mm: float = 0.0
    strongest_only: bool = False

    def to_dict(self) -> dict:
        """JSON-able form, as stored in the checkpoint (no guide fields without a guide)."""
        data = asdict(self)
        if not self.guide:
            del data["guide"], data["guide_z"], data["guide_reach_mm"], data["strongest_only"]
        return data


@dataclass(frozen=True)
class Refinement:
    """The settings of the ``refined`` or ``guided`` protocol: the gate, and each map's mask
    settings."""

    z_sigma_mm: float = 0.0
    gate: float = 0.5
    maps: Mapping[str, MaskSettings] | None = None

    def to_dict(self) -> dict:
        """JSON-able form, as stored in the checkpoint under the protocol's name."""
        maps = {k: v.to_dict() for k, v in (self.maps or {}).items()}
        return {"z_sigma_mm": self.z_sigma_mm, "gate": self.gate, "maps": maps}

    @classmethod
    def from_dict(cls, data: Mapping) -> Refinement:
        """Read the checkpoint's ``refined`` or ``guided`` entry; raises ValueError when it is
        malformed.

        Each map's entry needs a ``threshold``; keys other than the settings (validation
        scores) are ignored.
        """
        names = {f.name for f in fields(MaskSettings)}
        try:
            maps = {
                k: MaskSettings(
                    threshold=v["threshold"],
                    **{f: v[f] for f in (names - {"threshold"}) & v.keys()},
                )
                for k, v in data.get("maps", {}).items()
            }
            return cls(float(data["z_sigma_mm"]), float(data["gate"]), maps)
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"refined settings not understood ({error!r})") from None

    def mask_settings(self, name: str) -> MaskSettings:
        """The mask settings of map ``name``; raises ValueError when none were calibrated."""
        if not self.maps or name not in self.maps:
            raise ValueError(f"the refined protocol has no calibrated settings for map {name!r}")
        return self.maps[name]


def refinement_of(
    meta: Mapping, source: str = "the checkpoint", protocol: str = "refined"
) -> Refinement:
    """The calibrated settings of the ``refined`` (or ``guided``) protocol of a checkpoint.

    Raises
    ------
    ValueError
        When the checkpoint has none (calibrated before the protocol existed).
    """
    if protocol not in meta:
        raise ValueError(
            f"{source} has no calibrated settings for the {protocol} protocol; add them with "
            "`python -m training.calibrate CHECKPOINT --cache CACHE --out NEW.safetensors` "
            "or use --protocol paper"
        )
    return Refinement.from_dict(meta[protocol])


def default_protocol(meta: Mapping) -> str:
    """The protocol a checkpoint recommends: the one that measured best on its validation
    patients (``protocol`` in its metadata), else ``paper``."""
    protocol = meta.get("protocol", "paper")
    return protocol if protocol in PROTOCOLS else "paper"


def check_protocol(protocol: str) -> str:
    """``protocol`` itself, or ValueError naming the known ones."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    return protocol


def slice_gate(probs: np.ndarray, z_spacing: float, z_sigma_mm: float, gate: float) -> np.ndarray:
    """``(Z,)`` bool: slices whose tumour probability, smoothed along z, reaches ``gate``."""
    probs = np.asarray(probs, np.float64)
    if z_sigma_mm > 0:
        probs = ndimage.gaussian_filter1d(probs, z_sigma_mm / z_spacing, mode="constant")
    return probs >= gate


def refined_maps(
    result,
    z_spacing: float,
    refinement: Refinement,
    weights: Mapping[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Every map of a :class:`~equicam.core.inference.CamResult` under the refined protocol.

    Parameters
    ----------
    result
        Maps of a whole volume (its ``raw`` maps and ``slice_prob`` are used).
    z_spacing
        Slice distance in mm.
    refinement
        Its ``z_sigma_mm`` and ``gate`` are used here.
    weights
        Fusion weights of the ``weighted`` fusion (the model's).

    Returns
    -------
    dict
        Map name (modalities, then ``fused_<name>`` for each fusion of ``result``) -> float32
        map in [0, 1].
    """
    if not result.raw:
        raise ValueError("the refined protocol needs the raw maps of a whole volume")
    maps = {}
    for m, raw in result.raw.items():
        keep = slice_gate(result.slice_prob[m], z_spacing, refinement.z_sigma_mm, refinement.gate)
        gated = raw * keep[:, None, None].astype(np.float32)
        top = float(gated.max())
        maps[m] = gated / top if top > 0 else gated
    fused = {f"fused_{f}": fuse(f, maps, weights) for f in result.fused}
    return {**maps, **fused}


def touching_regions(seed: np.ndarray, bright: np.ndarray) -> np.ndarray:
    """The connected regions of ``bright`` (bool, face connectivity) that ``seed`` touches."""
    labels, _ = ndimage.label(bright)
    hit = np.zeros(labels.max() + 1, dtype=bool)
    hit[labels[seed & bright]] = True
    hit[0] = False
    return hit[labels]


def guided_mask(
    seed: np.ndarray,
    brain: np.ndarray,
    spacing: Sequence[float],
    settings: MaskSettings,
    images: Mapping[str, np.ndarray] | None,
) -> np.ndarray:
    """The bright regions of ``settings.guide`` (in ``images``, normalised) inside the brain
    that ``seed`` (bool) touches, cut at ``settings.guide_reach_mm`` from it when above 0."""
    if images is None or settings.guide not in images:
        raise ValueError(f"the guided protocol needs the case's {settings.guide} scan")
    regions = touching_regions(seed, brain & (images[settings.guide] >= settings.guide_z))
    if settings.guide_reach_mm > 0:
        regions &= distance_to(seed, spacing, settings.guide_reach_mm) <= settings.guide_reach_mm
    return regions


def refined_mask(
    volume: np.ndarray,
    brain: np.ndarray,
    spacing: Sequence[float],
    settings: MaskSettings,
    images: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """A refined map's mask (bool): threshold, components, growth inside the brain; with a
    ``guide``, the bright regions of that sequence (in ``images``, normalised) the threshold
    (or, with ``strongest_only``, its strongest component) touches."""
    mask = volume >= settings.threshold
    if settings.guide:
        if settings.strongest_only:
            mask = strongest_component(mask, volume)
        return guided_mask(mask, brain, spacing, settings, images)
    if settings.largest_only:
        mask = largest_component(mask)
    elif settings.min_component_mm3 > 0:
        mask = remove_small_components(mask, spacing, settings.min_component_mm3)
    if settings.grow_mm > 0:
        mask = grow(mask, spacing, settings.grow_mm) & brain
    return mask


def apply_protocol(
    result,
    protocol: str,
    meta: Mapping,
    spacing: Sequence[float],
    threshold: float | None = None,
    weights: Mapping[str, float] | None = None,
    images: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """Maps, masks and the settings used, for one volume under a protocol.

    Parameters
    ----------
    result
        A :class:`~equicam.core.inference.CamResult` of a whole volume.
    protocol
        ``paper``, ``refined``, ``guided`` or :data:`THRESHOLD_ONLY` (the maps as they are,
        thresholded).
    meta
        The checkpoint's metadata (thresholds, ``refined`` settings).
    spacing
        Voxel size in mm along the volume's axes (z first).
    threshold
        Overrides every map's threshold (the rest of the protocol stays).
    weights
        Fusion weights of the ``weighted`` fusion (the model's).
    images
        Modality -> the case's volume as :func:`~equicam.core.preprocess.normalise_volume`
        gives it; the ``guided`` protocol needs its guide sequence.

    Returns
    -------
    (maps, masks, settings)
        Map name -> float32 map; map name -> uint8 mask; the JSON-able settings applied
        (``thresholds`` for ``paper`` and :data:`THRESHOLD_ONLY`, the protocol's entry for the
        others).
    """
    from equicam.core.evaluation import chosen_thresholds

    if protocol != THRESHOLD_ONLY:
        check_protocol(protocol)
    if protocol in ("paper", THRESHOLD_ONLY):
        maps = result.all_maps()
        thresholds = chosen_thresholds(meta, threshold, maps)
        return maps, result.masks(thresholds), {"thresholds": thresholds}
    refinement = refinement_of(meta, protocol=protocol)
    maps = refined_maps(result, spacing[0], refinement, weights)
    used, masks = {}, {}
    for name, volume in maps.items():
        settings = refinement.mask_settings(name)
        if threshold is not None:
            settings = MaskSettings(**{**settings.to_dict(), "threshold": float(threshold)})
        used[name] = settings.to_dict()
        mask = refined_mask(volume, result.brain, spacing, settings, images)
        masks[name] = mask.astype(np.uint8)
    settings = {"z_sigma_mm": refinement.z_sigma_mm, "gate": refinement.gate, "maps": used}
    return maps, masks, settings
