"""napari reader: a BraTS case (folder or any of its files), or a saved mask.

A case opens as its modalities and ground truth. Any other NIfTI file opens as a mask (a
Labels layer): with the geometry of the case it lies next to or inside (or whose ``cam.json``
names it), so that it saves back in that case's geometry; on its own, with its own geometry.
A folder of several cases opens in the case navigator of the CAM inspector (docked if
needed). Whatever cannot be opened raises :class:`~equicam.core.errors.EquicamError` with
the reason, which napari shows to the user.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from equicam.core.atomic import scan_reason
from equicam.core.brats import (
    CaseError,
    CaseFiles,
    CaseWarning,
    Geometry,
    file_geometry,
    find_case,
    load_case,
    read_nifti,
)
from equicam.core.cam_output import described_protocol
from equicam.plugin.cases import holds_cases
from equicam.plugin.layers import LABEL_COLORS, case_layers, display_translate

_NIFTI_ENDINGS = (".nii", ".nii.gz")
PLUGIN = "napari-equicam"
# The names equicam gives masks: "<case id>_mask...nii.gz" (the plugin's Save, see
# cam_layers.default_mask_path) and "<case id>/mask-<map>.nii.gz" (``equicam cam``).
MASK_PATTERNS = ("*_mask*.nii.gz", "*_mask*.nii", "*/mask-*.nii.gz", "*/mask-*.nii")


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_ENDINGS)


def get_reader(path: str | list[str]) -> Callable[[str], list[tuple]] | None:
    """Claim one NIfTI file, or a folder holding NIfTI files; None for anything else.

    What is claimed is read by :func:`read`, which says why when it cannot open it.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(path)
    if _is_nifti(path):
        return read
    try:
        if not path.is_dir():
            return None
        find_case(path)
    except CaseError:
        if holds_cases(path):
            return read_folder
        return read if any(_is_nifti(p) for p in path.iterdir()) else None
    except OSError:
        return None
    return read


def prefer_for_masks() -> None:
    """Let ``viewer.open(mask)`` open equicam's saved masks with this reader, without asking.

    napari's builtin reader also claims ``*.nii.gz``, and napari chooses between readers of a
    file only by the user's reader preferences (Preferences > Plugins, the setting
    ``plugins.extension2reader``); with two readers and no preference ``viewer.open`` refuses
    and the window asks. So the first time equicam opens or saves something, it adds a
    preference for the names it gives masks (:data:`MASK_PATTERNS`), never replacing one the
    user set; the user can change or remove it in the preferences.
    """
    from napari.settings import get_settings

    plugins = get_settings().plugins
    current = plugins.extension2reader
    missing = {pattern: PLUGIN for pattern in MASK_PATTERNS if pattern not in current}
    if missing:
        plugins.extension2reader = {**current, **missing}


def read_folder(path: str | list[str]) -> list[tuple]:
    """Open a folder of cases in the CAM inspector's case navigator (no layers returned here:
    the navigator adds the case it opens)."""
    import napari

    from equicam.plugin.viewer import open_folder

    if isinstance(path, list):
        path = path[0]
    viewer = napari.current_viewer()
    if viewer is None:
        raise CaseError(path, "a folder of cases opens only in a napari window")
    open_folder(viewer, path)
    return [(None,)]


def read(path: str | list[str]) -> list[tuple]:
    """Open a case, or a mask file (see the module docstring).

    Raises
    ------
    CaseError
        Naming the file and the reason it cannot be opened.
    """
    if isinstance(path, list):
        path = path[0]
    path = Path(path)
    prefer_for_masks()
    if path.is_file() and _is_nifti(path) and scan_reason(path) is None:
        return read_mask(path)
    return read_case(path)


def read_case(path: str | Path) -> list[tuple]:
    """Load the case that ``path`` belongs to as image layers plus its ground truth.

    Problems that do not stop loading (a missing modality, an oblique scan) are shown to the
    user as warnings; bad files raise :class:`~equicam.core.brats.CaseError`, which napari
    shows as a notification naming the file.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        case = load_case(path)
    for warning in caught:
        warnings.warn(warning.message, warning.category, stacklevel=2)
    return case_layers(case)


def _owning_case(mask: Path) -> CaseFiles | None:
    """The case a mask file belongs to: named by a ``cam.json`` beside it, or the one case
    in its folder or the folder above."""
    provenance = mask.parent / "cam.json"
    folders = [mask.parent, mask.parent.parent]
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        folders.insert(0, Path(json.loads(provenance.read_text())["case_folder"]))
    for folder in folders:
        try:
            return find_case(folder)
        except CaseError:
            continue
    return None


def _case_geometry(files: CaseFiles) -> Geometry | None:
    """The geometry of a case's first scan, from its header alone (None if unreadable)."""
    first = next(iter(files.images.values()))
    try:
        image = nib.load(first)
        return file_geometry(first, image, image.shape)
    except Exception:  # noqa: BLE001 - the mask then opens in its own geometry
        return None


def read_mask(path: Path) -> list[tuple]:
    """A saved mask as a Labels layer in the geometry of its case, or its own.

    Raises
    ------
    CaseError
        When the file is unreadable, not 3-D, or holds values that are not labels 0..255.
    """
    data, image = read_nifti(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise CaseError(path, f"a mask must be a 3-D volume, found shape {data.shape}")
    with np.errstate(all="ignore"):
        integral = np.all(np.isfinite(data)) and np.array_equal(data, np.round(data))
    if not integral or data.min(initial=0) < 0 or data.max(initial=0) > 255:
        raise CaseError(
            path, "not a mask: it holds values other than labels 0..255 (a CAM map or a scan?)"
        )
    own = file_geometry(path, image, data.shape)
    files = _owning_case(path)
    case_id, folder, inputs, geometry = path.name.split(".")[0], path.parent, [], own
    if files is not None:
        reference = _case_geometry(files)
        if (
            reference is not None
            and reference.file_shape == own.file_shape
            and np.allclose(reference.affine, own.affine, atol=1e-3)
        ):
            case_id, folder, geometry = files.case_id, files.folder, reference
            inputs = sorted(str(p) for p in files.inputs)
        else:
            warnings.warn(
                f"{path}: its grid differs from case {files.case_id}'s scans; opened in its "
                "own geometry",
                CaseWarning,
                Geometry,
                stacklevel=2,
            )
    info = {
        "case_id": case_id,
        "case_folder": str(folder),
        "geometry": geometry,
        "inputs": inputs,
        "saved_file": str(path),
        "saved": True,
        "edited": False,
    }
    made_by = image.header["descrip"].item().decode("ascii", "replace")
    if described_protocol(made_by) is not None:  # by the plugin or `equicam cam`: kept on save
        info.update(description=made_by, protocol=described_protocol(made_by))
    labels = np.ascontiguousarray(geometry.to_display(data.astype(np.uint8)))
    kwargs = {
        "name": path.name.split(".")[0],
        "scale": geometry.spacing,
        "translate": display_translate(geometry),
        "opacity": 0.5,
        "colormap": LABEL_COLORS,
        "metadata": {"equicam": info},
    }
    return [(labels, kwargs, "labels")]
