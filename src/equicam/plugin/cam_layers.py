"""Output layers of a CAM run (no Qt): names, layer data, masks, volumes, metrics, save paths.

Names are short, so that napari's layer list shows them whole, and distinct, so that several
runs sit side by side: ``CAM FLAIR eq``, ``mask fused·mean base GC``. The full name
(``mask fused mean (baseline, Grad-CAM)``) is in the layer's ``metadata["equicam"]["full_name"]``
and names the mask's default file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from napari.utils.colormaps import Colormap

from equicam.core.atomic import scan_reason
from equicam.core.brats import LAYER_NAMES
from equicam.core.inference import METHOD_NAMES, CamResult
from equicam.core.metrics import SurfaceReference, dice
from equicam.plugin.layers import display_translate
from equicam.plugin.sample_data import chosen_mask_folder, mask_folder

CAM_FADE = (0.3, 0.65)  # a CAM is transparent below the first value, opaque above the second


def cam_colormap() -> Colormap:
    """Inferno with an alpha ramp: low CAM values leave the scan untouched, peaks stand out."""
    from matplotlib import colormaps

    values = np.linspace(0.0, 1.0, 64)
    colors = colormaps["inferno"](values)
    low, high = CAM_FADE
    colors[:, 3] = np.clip((values - low) / (high - low), 0.0, 1.0)
    return Colormap(colors, name="inferno (transparent where low)", controls=values)


def layer_info(layer) -> dict:
    """The ``equicam`` metadata of a layer (empty for foreign layers and for None)."""
    return layer.metadata.get("equicam", {}) if layer is not None else {}


def run_label(model: str, method: str, bias_corrected: bool = False) -> str:
    """``equivariant``, ``baseline, Grad-CAM`` or ``equivariant, bias-corrected``: what
    produced a layer."""
    label = model if method == "cam" else f"{model}, {METHOD_NAMES[method]}"
    return f"{label}, bias-corrected" if bias_corrected else label


def map_title(name: str) -> str:
    """``flair`` -> ``FLAIR``; ``fused_mean`` -> ``fused mean``."""
    return LAYER_NAMES.get(name, name.replace("_", " "))


# Words of map and run names shortened in layer names; a checkpoint file's name stays whole.
SHORT_WORDS = {
    "weighted": "w",
    "geometric": "geo",
    "equivariant": "eq",
    "baseline": "base",
    "second-stage": "2nd",
    "Grad-CAM": "GC",
    "Grad-CAM++": "GC++",
    "bias-corrected": "bc",
}


def _layer_name(kind: str, name: str, label: str, full: bool) -> str:
    if full:
        return f"{kind} {map_title(name)} ({label})"
    fusion = name.removeprefix("fused_")
    shown = map_title(name) if fusion == name else f"fused·{SHORT_WORDS.get(fusion, fusion)}"
    run = " ".join(SHORT_WORDS.get(word, word) for word in label.split(", "))
    return f"{kind} {shown} {run}"


def cam_layer_name(name: str, label: str, full: bool = False) -> str:
    """Name of the CAM image layer of map ``name`` from run ``label``: ``CAM fused·w eq``;
    ``full``: ``CAM fused weighted (equivariant)``."""
    return _layer_name("CAM", name, label, full)


def mask_layer_name(name: str, label: str, full: bool = False) -> str:
    """Name of the pseudo-mask Labels layer of map ``name`` from run ``label``:
    ``mask T2 base GC++``; ``full``: ``mask T2 (baseline, Grad-CAM++)``."""
    return _layer_name("mask", name, label, full)


def cam_layers(
    maps: dict[str, np.ndarray],
    label: str,
    scale,
    metadata: dict,
    settings: dict[str, dict],
    protocol: str,
) -> list[tuple]:
    """Image layer data tuples, one CAM per map (modalities, then fusions).

    CAMs use a heat colour map that is transparent where the map is low (:func:`cam_colormap`),
    contrast 0..1, placed like the scan (``scale``, and ``translate`` from the case's
    geometry); fused maps are shown, per-modality maps start hidden so the view is not crowded.
    Every layer carries the scan's metadata (``scale`` and ``metadata`` of the scan layer), so
    that masks made from it save in the scan's geometry, the ``protocol`` its map was made
    under, and its map's mask settings (``settings[map name]``: ``threshold``, and under
    ``refined`` its components and growth) as ``threshold`` and ``mask_settings``.
    """
    return [
        (
            volume,
            {
                "name": cam_layer_name(name, label),
                "scale": scale,
                "translate": _translate(metadata),
                "colormap": cam_colormap(),
                "blending": "translucent",
                "contrast_limits": (0.0, 1.0),
                "opacity": 0.8,
                "visible": name not in LAYER_NAMES,
                "metadata": _with_map(metadata, name, label, settings[name], protocol),
            },
            "image",
        )
        for name, volume in maps.items()
    ]


def _translate(metadata: dict) -> tuple[float, ...]:
    geometry = metadata.get("equicam", {}).get("geometry")
    return display_translate(geometry) if geometry is not None else (0.0, 0.0, 0.0)


def pseudo_mask(cam: np.ndarray, threshold: float) -> np.ndarray:
    """The pseudo-mask of a CAM: ``uint8(cam >= threshold)``, the rule of ``CamResult.masks``."""
    return CamResult("cam", {"map": np.asarray(cam)}).masks(threshold)["map"]


def _with_map(metadata: dict, name: str, label: str, settings: dict, protocol: str) -> dict:
    info = dict(metadata.get("equicam", {}))
    info.update(
        {
            "map": name,
            "run": label,
            "full_name": cam_layer_name(name, label, full=True),
            "protocol": protocol,
            "threshold": settings["threshold"],
            "mask_settings": settings,
            "edited": False,
            "saved": True,
        }
    )
    return {"equicam": info}


def in_use_text(
    meta: dict, fusion: str, thresholds: dict[str, float] | None, protocol: str, note: str = ""
) -> str:
    """What a run used, in one line: the protocol, the fusion (with its weights) and the mask
    thresholds.

    Parameters
    ----------
    meta
        The checkpoint's metadata (``fusion_weights`` when it has them).
    fusion
        The fusion in use (``weighted``, ``mean``, ...; empty: none, a second stage).
    thresholds
        Map name -> mask threshold, or None when the slider's value applies to every map.
    protocol
        The protocol the maps were made under.
    note
        Why that is not the protocol chosen (empty when it is).
    """
    text = f"protocol {protocol}" + (f" ({note})" if note else "")
    text += f"; fusion {fusion}" if fusion else ""
    weights = meta.get("fusion_weights")
    if fusion == "weighted" and weights:
        text += " (" + ", ".join(f"{map_title(m)} {w:.2f}" for m, w in weights.items()) + ")"
    if thresholds:
        shown = ", ".join(f"{map_title(m)} {t:.2f}" for m, t in thresholds.items())
        text += f"; mask thresholds: {shown}"
    return text


def volume_cm3(mask: np.ndarray, scale) -> float:
    """Volume of the non-zero voxels in cm3 (``scale`` in mm)."""
    return float(np.count_nonzero(mask) * np.prod(scale) / 1000.0)


def default_mask_path(info: dict, layer_name: str) -> Path:
    """``<case folder>/<case id>_mask_<layer name slug>.nii.gz`` for a mask layer of a case.

    ``info`` is the layer's ``metadata["equicam"]`` (``case_folder``, ``case_id``). The file
    the layer was last saved to or opened from, when it has one. A run's short mask name is
    written in full (``mask fused·w eq edited`` -> ``..._mask_fused_weighted_equivariant_edited``,
    the files of earlier versions). ``++`` becomes ``pp``
    (Grad-CAM++ and Grad-CAM masks get different names); a slug gets ``mask_`` in front unless
    it starts with ``mask``, and a name that would end like a scan (``_t2``, ``_seg``...) gets
    ``_mask`` too; the sample case's masks go to the user's folder.
    """
    if info.get("saved_file"):
        return Path(info["saved_file"])
    if {"map", "run"} <= info.keys():
        short = mask_layer_name(info["map"], info["run"])
        if layer_name.startswith(short):
            full = mask_layer_name(info["map"], info["run"], full=True)
            layer_name = full + layer_name.removeprefix(short)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", layer_name.replace("++", "pp")).strip("_")
    if not slug.lower().startswith("mask"):
        slug = f"mask_{slug}"  # found as a saved mask, and opened by equicam's reader
    name = f"{info['case_id']}_{slug}.nii.gz"
    if scan_reason(name):
        name = f"{info['case_id']}_{slug}_mask.nii.gz"
    return mask_folder(info["case_folder"], info["case_id"], chosen_mask_folder()) / name


def compare_table(masks: dict[str, np.ndarray], truth: np.ndarray, spacing) -> dict[str, list]:
    """Dice, ASSD and HD95 (mm) of each mask against the whole tumour ``truth > 0``.

    Parameters
    ----------
    masks
        Layer name -> mask ``(Z, Y, X)`` (non-zero = tumour).
    truth
        Ground-truth labels ``(Z, Y, X)``.
    spacing
        Voxel size ``(dz, dy, dx)`` in mm.

    Returns
    -------
    dict
        Columns ``mask``, ``Dice``, ``ASSD (mm)``, ``HD95 (mm)`` (rounded for display).
    """
    whole = np.asarray(truth) > 0
    surface = SurfaceReference(whole, tuple(spacing))  # the truth's surface, built once
    rows: dict[str, list] = {"mask": [], "Dice": [], "ASSD (mm)": [], "HD95 (mm)": []}
    for name, mask in masks.items():
        pred = np.asarray(mask) > 0
        scores = surface.scores(pred)
        rows["mask"].append(name)
        rows["Dice"].append(round(float(dice(pred, whole)), 3))
        rows["ASSD (mm)"].append(round(float(scores["assd"]), 2))
        rows["HD95 (mm)"].append(round(float(scores["hd95"]), 2))
    return rows
