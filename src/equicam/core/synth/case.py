"""One synthetic case, from anatomy to files on disk (``equicam synth``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from equicam.core.anatomy import BRATS_AFFINE, BRATS_SHAPE, load_anatomy
from equicam.core.atomic import folder_in_place
from equicam.core.errors import EquicamError
from equicam.core.mask_edit import distance_to
from equicam.core.synth.acquisition import acquire, stripped_mask
from equicam.core.synth.families import FAMILIES, MIXTURES, Family, family_names
from equicam.core.synth.fields import smooth_field
from equicam.core.synth.sequences import Protocol, draw_protocol, signal
from equicam.core.synth.tissue import TISSUES, draw_tissues
from equicam.core.synth.tumours import grow_tumours, plan_tumours

SEQUENCES = ("t1", "t1ce", "t2", "flair")
CASE_TYPES = ("hgg",) * 6 + ("lgg",) * 2 + ("multifocal", "healthy")
DEFAULT_FAMILY = "train"


@dataclass
class SyntheticCase:
    """One generated case, arrays in BraTS file order (LPS, ``affine``).

    Attributes
    ----------
    images
        Sequence name -> int16 volume.
    seg
        uint8 labels in the BraTS 2021 convention (1 necrosis, 2 oedema, 4 enhancing).
    affine
        Voxel-to-world affine of every file.
    case_type
        ``hgg``, ``lgg``, ``multifocal`` or ``healthy``.
    family
        The appearance family the case was imaged in.
    protocols
        Sequence name -> the parameters drawn for it.
    dominant
        uint8 index into :data:`~equicam.core.synth.tissue.TISSUES` of each voxel's largest
        tissue fraction (255 outside the brain); for tests and reports, not written.
    """

    images: dict[str, np.ndarray]
    seg: np.ndarray
    affine: np.ndarray
    case_type: str
    family: str
    protocols: dict[str, Protocol]
    dominant: np.ndarray


def _grid(size: str) -> tuple[tuple[int, int, int], np.ndarray, float]:
    if size == "full":
        return BRATS_SHAPE, BRATS_AFFINE.copy(), 1.0
    if size == "small":
        affine = BRATS_AFFINE.copy()
        affine[:3, :3] *= 2.0
        affine[1, 3] = 238.0
        return (120, 120, 78), affine, 2.0
    raise ValueError(f"unknown size {size!r}; use 'full' or 'small'")


def _warp(rng, shape, mm):
    """Where each output voxel samples the template: similarity transform plus smooth warp."""
    coords = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, np.float32) - 1) / 2
    angle, scale = rng.uniform(-0.08, 0.08), rng.uniform(0.93, 1.07)
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], np.float32)
    src = np.tensordot(rot / scale, coords - centre.reshape(3, 1, 1, 1), axes=1)
    src += centre.reshape(3, 1, 1, 1)
    for axis in range(3):
        src[axis] += (4.0 / mm) * smooth_field(rng, shape, 5)
    return src


def _mimics(rng, tissue, depth, brain, seg, mm) -> dict[str, np.ndarray]:
    """White-matter hyperintensities, enhancing surface vessels and choroid plexus."""
    shape = brain.shape
    ventricles = (tissue["csf"] > 0.6) & (depth > 25.0)
    near_vent = distance_to(ventricles, (mm,) * 3, 8.0)
    load = rng.uniform(0.3, 1.2)
    field = smooth_field(rng, shape, 24)
    wmh = (tissue["wm"] > 0.5) & (
        ((near_vent < rng.uniform(3, 8)) & (field > 0.3 - load)) | (field > 2.6 - load)
    )
    vessels = (np.abs(smooth_field(rng, shape, 30)) < 0.05) & (depth < 6.0) & brain
    choroid = ventricles & (smooth_field(rng, shape, 20) > 1.6)
    return {
        "wmh": (wmh & (seg == 0)).astype(np.float32) * rng.uniform(0.6, 1.0),
        "vessel": vessels.astype(np.float32),
        "choroid": choroid.astype(np.float32),
    }


def make_case(
    seed: int, index: int, size: str = "full", family: str | Family = DEFAULT_FAMILY
) -> SyntheticCase:
    """Generate case number ``index`` of the set drawn with ``seed``, imaged in ``family``.

    The patient (anatomy, tumour, mimics) depends on ``(seed, index)`` only, so one patient can
    be imaged in several families; the appearance (tissue parameters, sequences, acquisition)
    is drawn from the family.

    Parameters
    ----------
    seed
        Seed of the whole set.
    index
        Case number; fixes the case type (:data:`CASE_TYPES`) and the random streams.
    size
        ``full`` (240 x 240 x 155 at 1 mm) or ``small`` (120 x 120 x 78 at 2 mm).
    family
        A family of :data:`~equicam.core.synth.families.FAMILIES`, or a mixture of
        :data:`~equicam.core.synth.families.MIXTURES` (each case draws one of its families),
        by name; or a :class:`~equicam.core.synth.families.Family` itself (a variant, for
        ablations).

    Returns
    -------
    SyntheticCase
    """
    if not isinstance(family, Family) and family not in family_names():
        raise ValueError(f"unknown family {family!r}; use one of {', '.join(family_names())}")
    shape, affine, mm = _grid(size)
    patient_rng, look_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(2)
    )
    if isinstance(family, Family):
        look = family
    else:
        if family in MIXTURES:
            family = str(look_rng.choice(MIXTURES[family]))
        look = FAMILIES[family]
    case_type = CASE_TYPES[index % len(CASE_TYPES)]
    anatomy = load_anatomy()

    src = _warp(patient_rng, shape, mm)
    brain0 = ndimage.map_coordinates(anatomy["brain"].astype(np.float32), src * mm, order=1) > 0.5
    wm0 = ndimage.map_coordinates(anatomy["wm"], src * mm, order=1)
    depth0 = ndimage.distance_transform_edt(brain0) * mm
    tumours, _ = plan_tumours(patient_rng, case_type, wm0, depth0, mm)
    for t in tumours:  # mass effect: tissue pushed away from each tumour
        rel = src - t.centre.reshape(3, 1, 1, 1)
        reach = 2 * (1.8 * t.core_radius * t.reach * 0.6) ** 2
        src -= rel * (patient_rng.uniform(0.25, 0.45) * np.exp(-(rel**2).sum(axis=0) / reach))

    brain = ndimage.map_coordinates(anatomy["brain"].astype(np.float32), src * mm, order=1) > 0.5
    tissue = {
        k: ndimage.map_coordinates(anatomy[k], src * mm, order=1) * brain
        for k in ("gm", "wm", "csf")
    }
    del src
    depth = ndimage.distance_transform_edt(brain) * mm
    seg, lesions = grow_tumours(patient_rng, tumours, brain, tissue["wm"])
    lesions.update(_mimics(patient_rng, tissue, depth, brain, seg, mm))
    mask, rim = stripped_mask(patient_rng, brain, depth, mm, look.residue)
    # Skull-stripping residue: dura (taken as blood) and CSF.
    tissue["csf"] = np.where(rim, 0.6, tissue["csf"])
    lesions["vessel"] = np.where(rim, 0.4, lesions["vessel"])

    lesion_total = np.zeros(shape, np.float32)
    for frac in lesions.values():
        np.maximum(lesion_total, frac, out=lesion_total)
    fractions = {k: v * (1 - lesion_total) for k, v in tissue.items()}
    fractions.update(lesions)
    stack = np.stack([fractions.get(k, np.zeros(shape, np.float32)) for k in TISSUES])
    dominant = np.where(mask, stack.argmax(axis=0), 255).astype(np.uint8)
    del stack

    params, r1 = draw_tissues(look_rng, look.field)
    texture = {
        "gm": 0.05 * smooth_field(look_rng, shape, 40),
        "lesion": 0.08 * smooth_field(look_rng, shape, 30),
    }
    lesion_kinds = ("oedema", "necrosis", "cyst", "enhancing", "nonenhancing")
    bias = look_rng.uniform(*look.bias)
    images, protocols = {}, {}
    for name in SEQUENCES:
        protocol = draw_protocol(
            look_rng,
            look.recipes[name],
            csf_t1=params["csf"].t1,
            contrast=name == "t1ce",
            snr_scale=look.field / 3.0,
        )
        protocols[name] = protocol
        ideal = np.zeros(shape, np.float32)
        for k, frac in fractions.items():
            value = signal(protocol, params[k], r1)
            if k == "gm":
                ideal += frac * value * (1 + texture["gm"])
            elif k in lesion_kinds:
                ideal += frac * value * (1 + texture["lesion"])
            else:
                ideal += frac * value
        shift = 0.0 if name == "t1ce" else look.misregistration
        volume = acquire(look_rng, ideal, mask, protocol, mm=mm, shift_mm=shift, bias=bias)
        gain = 10 ** look_rng.uniform(2.3, 3.5) / float(np.median(volume[mask]))
        images[name] = np.where(mask, np.clip(np.round(volume * gain), 1, 32767), 0).astype(
            np.int16
        )
    seg[~mask] = 0
    return SyntheticCase(images, seg, affine, case_type, look.name, protocols, dominant)


def case_id(index: int) -> str:
    """The BraTS 2021 style identifier of case ``index``."""
    return f"BraTS2021_{index:05d}"


def write_case(
    out_dir: str | os.PathLike,
    seed: int,
    index: int,
    size: str = "full",
    family: str | Family = DEFAULT_FAMILY,
) -> Path:
    """Write case ``index`` of the set ``seed`` to ``out_dir/<case id>/`` (BraTS 2021 names).

    The case folder is built beside its name and renamed into place when whole
    (:func:`~equicam.core.atomic.folder_in_place`): a killed run leaves no half case, and a
    case folder that already holds files is refused, never overwritten.

    Raises
    ------
    equicam.core.atomic.SaveError
        When ``out_dir/<case id>`` already holds files or cannot be written.
    """
    case = make_case(seed, index, size, family)
    folder = Path(out_dir) / case_id(index)
    with folder_in_place(folder) as work:
        for name, volume in {**case.images, "seg": case.seg}.items():
            header = nib.Nifti1Header()
            header.set_xyzt_units("mm", "sec")
            header.set_data_dtype(volume.dtype)
            image = nib.Nifti1Image(volume, case.affine, header)
            image.set_qform(case.affine, code=1)
            image.set_sform(case.affine, code=1)
            nib.save(image, work / f"{case_id(index)}_{name}.nii.gz")
    return folder


def write_cases(
    out_dir: str | os.PathLike,
    n_cases: int,
    seed: int,
    size: str = "full",
    family: str = DEFAULT_FAMILY,
    start: int = 0,
) -> list[Path]:
    """Write cases ``start .. start + n_cases - 1`` of the set ``seed`` in the BraTS 2021 layout.

    Parameters
    ----------
    out_dir
        Folder that receives one sub-folder per case.
    n_cases
        Number of cases.
    seed
        Seed of the set; the same seed and family give identical files.
    size
        ``full`` or ``small`` (see :func:`make_case`).
    family
        Appearance family or mixture (see :func:`make_case`).
    start
        Index of the first case (to write a set in parts, in parallel).

    Returns
    -------
    list of Path
        The case folders.
    """
    if n_cases < 1:
        raise EquicamError("--cases", f"must be at least 1, got {n_cases}")
    return [write_case(out_dir, seed, i, size, family) for i in range(start, start + n_cases)]
