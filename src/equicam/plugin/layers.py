"""Case <-> napari layer data: one display geometry, file geometry kept in metadata.

Layers carry ``metadata["equicam"]``: the case id, the modality (for images), the
:class:`~equicam.core.brats.Geometry` needed to write a mask back in the scan's own geometry,
and the case's input files, which no save may overwrite.
"""

from __future__ import annotations

import numpy as np
from nibabel import orientations

from equicam.core.brats import DISPLAY_AXCODES, LAYER_NAMES, Case, Geometry

GROUND_TRUTH = "ground truth"
# Fixed tumour-region colours (normalised labels): core red, oedema green, enhancing yellow.
LABEL_COLORS = {None: "transparent", 0: "transparent", 1: "red", 2: "lime", 3: "yellow"}
LABEL_NAMES = {1: "necrotic core", 2: "oedema", 3: "enhancing"}
# Pseudo-masks in one colour that none of the ground truth's labels uses.
MASK_COLORS = {None: "transparent", 0: "transparent", 1: "deepskyblue"}
AXIS_LABELS = ("axial slice", "P", "L")  # display order: towards superior, posterior, left


def display_translate(geometry: Geometry) -> tuple[float, float, float]:
    """World position (mm) of the first display voxel, so that layers sit in scanner mm.

    napari's world axes are the display axes (superior, posterior, left): world coordinates are
    the scanner's RAS millimetres as ``(z, -y, -x)``, which keeps positive ``scale`` and so the
    radiological display (patient's right on the screen's left, anterior up). With this
    ``translate`` and ``scale = spacing`` a display voxel lands on its scanner position (for
    oblique scans, on the nearest axis-aligned one).
    """
    start = orientations.io_orientation(geometry.affine)
    to_display = orientations.ornt_transform(start, orientations.axcodes2ornt(DISPLAY_AXCODES))
    display_to_file = orientations.inv_ornt_aff(to_display, geometry.file_shape)
    x, y, z = (geometry.affine @ display_to_file @ np.array([0.0, 0.0, 0.0, 1.0]))[:3]
    return float(z), float(-y), float(-x)


def layer_metadata(case: Case, **extra) -> dict:
    """The ``metadata`` dict for a layer that belongs to ``case``."""
    info = {
        "case_id": case.case_id,
        "case_folder": str(case.files.folder),
        "geometry": case.geometry,
        "inputs": sorted(str(p) for p in case.files.inputs),
        **extra,
    }
    return {"equicam": info}


def contrast_limits(volume: np.ndarray) -> tuple[float, float]:
    """Display window from the 0.5 and 99.5 percentiles of the non-zero (brain) voxels."""
    inside = volume[volume != 0]
    if inside.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(inside, [0.5, 99.5])
    return float(low), float(max(high, low + 1e-3))


def case_layers(case: Case) -> list[tuple]:
    """Layer data tuples for a case: one image per modality, then the ground truth, if any."""
    scale, translate = case.spacing, display_translate(case.geometry)
    layers: list[tuple] = []
    for modality, volume in case.images.items():
        layers.append(
            (
                volume,
                {
                    "name": LAYER_NAMES[modality],
                    "scale": scale,
                    "translate": translate,
                    "colormap": "gray",
                    "contrast_limits": contrast_limits(volume),
                    "metadata": layer_metadata(case, modality=modality),
                },
                "image",
            )
        )
    if case.seg is not None:
        layers.append(
            (
                case.seg,
                {
                    "name": GROUND_TRUTH,
                    "scale": scale,
                    "translate": translate,
                    "opacity": 0.9,  # the CAM inspector draws it as an outline
                    "colormap": LABEL_COLORS,
                    "metadata": layer_metadata(
                        case, labels="1 necrotic core, 2 oedema, 3 enhancing"
                    ),
                },
                "labels",
            )
        )
    return layers
