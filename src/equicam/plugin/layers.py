"""Case <-> napari layer data: one display geometry, file geometry kept in metadata.

Layers carry ``metadata["equicam"]``: the case id, the modality (for images), the
:class:`~equicam.core.brats.Geometry` needed to write a mask back in the scan's own geometry,
and the case's input files, which no save may overwrite.
"""

from __future__ import annotations

import numpy as np

from equicam.core.brats import LAYER_NAMES, Case

GROUND_TRUTH = "ground truth"
# Fixed tumour-region colours (normalised labels): core red, oedema green, enhancing yellow.
LABEL_COLORS = {None: "transparent", 0: "transparent", 1: "red", 2: "lime", 3: "yellow"}


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
    scale = case.spacing
    layers: list[tuple] = []
    for modality, volume in case.images.items():
        layers.append(
            (
                volume,
                {
                    "name": LAYER_NAMES[modality],
                    "scale": scale,
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
                    "opacity": 0.5,
                    "colormap": LABEL_COLORS,
                    "metadata": layer_metadata(
                        case, labels="1 necrotic core, 2 oedema, 3 enhancing"
                    ),
                },
                "labels",
            )
        )
    return layers
