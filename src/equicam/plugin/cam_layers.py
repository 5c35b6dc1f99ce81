"""Output layers of a CAM run: names, layer data, and the volume of a mask (no Qt).

Names say what a layer is, so that several runs can sit side by side:
``CAM FLAIR (equivariant)``, ``mask fused mean (baseline, Grad-CAM)``.
"""

from __future__ import annotations

import numpy as np

from equicam.core.brats import LAYER_NAMES
from equicam.core.inference import METHOD_NAMES, CamResult


def run_label(model: str, method: str) -> str:
    """``equivariant`` or ``baseline, Grad-CAM``: what produced a layer."""
    return model if method == "cam" else f"{model}, {METHOD_NAMES[method]}"


def map_title(name: str) -> str:
    """``flair`` -> ``FLAIR``; ``fused_mean`` -> ``fused mean``."""
    return LAYER_NAMES.get(name, name.replace("_", " "))


def cam_layer_name(name: str, label: str) -> str:
    """Name of the CAM image layer of map ``name`` from run ``label``."""
    return f"CAM {map_title(name)} ({label})"


def mask_layer_name(name: str, label: str) -> str:
    """Name of the pseudo-mask Labels layer of map ``name`` from run ``label``."""
    return f"mask {map_title(name)} ({label})"


def cam_layers(
    result: CamResult, label: str, threshold: float, scale, metadata: dict
) -> list[tuple]:
    """Layer data tuples: a CAM image per map, then a pseudo-mask per map.

    CAMs use a heat colour map with additive blending over the scans; fused maps are shown,
    per-modality maps start hidden so the view is not crowded. Every layer carries the scan's
    metadata, so masks save in the scan's geometry.
    """
    layers = []
    maps = result.all_maps()
    for name, volume in maps.items():
        fused = name.startswith("fused")
        layers.append(
            (
                volume,
                {
                    "name": cam_layer_name(name, label),
                    "scale": scale,
                    "colormap": "inferno",
                    "blending": "additive",
                    "contrast_limits": (0.0, 1.0),
                    "opacity": 0.7,
                    "visible": fused,
                    "metadata": _with_map(metadata, name, label),
                },
                "image",
            )
        )
    for name, mask in result.masks(threshold).items():
        layers.append(
            (
                mask,
                {
                    "name": mask_layer_name(name, label),
                    "scale": scale,
                    "opacity": 0.5,
                    "visible": name.startswith("fused"),
                    "metadata": _with_map(metadata, name, label),
                },
                "labels",
            )
        )
    return layers


def _with_map(metadata: dict, name: str, label: str) -> dict:
    info = dict(metadata.get("equicam", {}))
    info.update({"map": name, "run": label, "edited": False, "saved": True})
    return {"equicam": info}


def volume_cm3(mask: np.ndarray, scale) -> float:
    """Volume of the non-zero voxels in cm3 (``scale`` in mm)."""
    return float(np.count_nonzero(mask) * np.prod(scale) / 1000.0)
