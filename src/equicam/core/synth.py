"""Synthetic BraTS-like cases built from a real brain (``equicam synth``).

Each case starts from the MNI152 tissue maps on the BraTS grid (:mod:`equicam.core.anatomy`),
then, deterministically from ``(seed, case index)``:

1. deforms the anatomy (a smooth random displacement field plus a small global rotation and
   scaling) and pushes tissue away from each tumour (mass effect);
2. grows irregular tumours: a lobulated core (necrosis inside an enhancing rim for high-grade
   cases, a non-enhancing core for low-grade ones) and oedema that spreads mostly along the
   white matter;
3. adds mimics that a single-sequence threshold confuses with tumour: periventricular and deep
   white-matter hyperintensities (bright on FLAIR and T2), enhancing vessels and choroid
   plexus (bright on T1ce), heterogeneous grey matter;
4. renders T1, T1ce, T2 and FLAIR from per-case tissue contrasts, then partial-volume blur,
   a multiplicative bias field per sequence and Rician noise; the background is exactly 0.

Case types cycle with the case index: of every ten cases, six are high-grade (necrosis,
enhancing rim, oedema), two low-grade (no enhancement, no necrosis), one multifocal high-grade
and one tumour-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from equicam.core.anatomy import BRATS_AFFINE, BRATS_SHAPE, load_anatomy

SEQUENCES = ("t1", "t1ce", "t2", "flair")
CASE_TYPES = ("hgg",) * 6 + ("lgg",) * 2 + ("multifocal", "healthy")
# BraTS 2021 labels written to disk.
NECROSIS, OEDEMA, ENHANCING = 1, 2, 4

# Mean signal per tissue and sequence (arbitrary units, WM of T1 = 0.8), jittered per case.
CONTRAST = {
    #            t1    t1ce   t2    flair
    "csf": (0.22, 0.22, 1.00, 0.12),
    "gm": (0.58, 0.60, 0.62, 0.62),
    "wm": (0.82, 0.80, 0.46, 0.50),
    "oedema": (0.55, 0.56, 0.84, 0.80),
    "necrosis": (0.30, 0.33, 0.92, 0.55),
    "enhancing": (0.56, 1.15, 0.72, 0.72),
    "nonenhancing": (0.50, 0.52, 0.80, 0.74),
    "wmh": (0.66, 0.66, 0.74, 0.78),
    "vessel": (0.55, 1.05, 0.40, 0.45),
}
SCANNER_GAIN = (700.0, 750.0, 1100.0, 900.0)


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
    """

    images: dict[str, np.ndarray]
    seg: np.ndarray
    affine: np.ndarray
    case_type: str


def _smooth_field(rng: np.random.Generator, shape, cells: int) -> np.ndarray:
    """Zero-mean, unit-std random field that varies over about ``shape / cells`` voxels."""
    coarse = rng.standard_normal(tuple(max(2, round(cells * s / max(shape))) for s in shape))
    # Cubic interpolation on a quarter-resolution grid, then linear: smooth and fast.
    quarter = tuple(max(c, s // 4) for s, c in zip(shape, coarse.shape, strict=True))
    up = [q / c for q, c in zip(quarter, coarse.shape, strict=True)]
    field = ndimage.zoom(coarse, up, order=3)
    field = ndimage.zoom(
        field.astype(np.float32), [s / q for s, q in zip(shape, field.shape, strict=True)], order=1
    )
    field = field[tuple(slice(0, s) for s in shape)]
    return ((field - field.mean()) / (field.std() + 1e-6)).astype(np.float32)


def _grid(size: str) -> tuple[tuple[int, int, int], np.ndarray, float]:
    if size == "full":
        return BRATS_SHAPE, BRATS_AFFINE.copy(), 1.0
    if size == "small":
        affine = BRATS_AFFINE.copy()
        affine[:3, :3] *= 2.0
        affine[1, 3] = 238.0
        return (120, 120, 78), affine, 2.0
    raise ValueError(f"unknown size {size!r}; use 'full' or 'small'")


def _tumour_centres(rng, wm: np.ndarray, brain_dist: np.ndarray, n: int, min_depth: float):
    candidates = np.argwhere((wm > 0.6) & (brain_dist > min_depth))
    picks = candidates[rng.choice(len(candidates), size=n, replace=False)]
    return [p.astype(np.float32) for p in picks]


def _lobulated_distance(rng, coords, centre, radius_vox, shape) -> np.ndarray:
    """Distance to ``centre`` in radii, perturbed by smooth noise so the shape is lobulated."""
    rel = coords - centre.reshape(3, 1, 1, 1)
    stretch = rng.uniform(0.75, 1.3, size=3).astype(np.float32).reshape(3, 1, 1, 1)
    dist = np.sqrt(((rel / stretch) ** 2).sum(axis=0)) / radius_vox
    return dist * (1.0 + 0.28 * _smooth_field(rng, shape, 9))


def make_case(seed: int, index: int, size: str = "full") -> SyntheticCase:
    """Generate case number ``index`` of the set drawn with ``seed``.

    Parameters
    ----------
    seed
        Seed of the whole set.
    index
        Case number; fixes the case type (:data:`CASE_TYPES`) and the random stream.
    size
        ``full`` (240 x 240 x 155 at 1 mm) or ``small`` (120 x 120 x 78 at 2 mm).

    Returns
    -------
    SyntheticCase
    """
    shape, affine, mm = _grid(size)
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    case_type = CASE_TYPES[index % len(CASE_TYPES)]
    anatomy = load_anatomy()
    coords = np.indices(shape, dtype=np.float32)

    # Where each output voxel samples the template (in template voxels): global similarity
    # transform about the centre, smooth warp, then mass effect around each tumour.
    centre = (np.array(shape, np.float32) - 1) / 2
    angle = rng.uniform(-0.08, 0.08)
    scale = rng.uniform(0.93, 1.07)
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
    src = np.tensordot(rot / scale, coords - centre.reshape(3, 1, 1, 1), axes=1)
    src += centre.reshape(3, 1, 1, 1)
    for axis in range(3):
        src[axis] += (4.0 / mm) * _smooth_field(rng, shape, 5)

    brain0 = (
        ndimage.map_coordinates(anatomy["brain"].astype(np.float32), src * mm, order=1, cval=0.0)
        > 0.5
    )
    wm0 = ndimage.map_coordinates(anatomy["wm"], src * mm, order=1, cval=0.0)
    depth = ndimage.distance_transform_edt(brain0) * mm

    n_tumours = {"hgg": 1, "lgg": 1, "multifocal": rng.integers(2, 4), "healthy": 0}[case_type]
    tumours = []
    for c in _tumour_centres(rng, wm0, depth, n_tumours, 25.0):
        big = case_type != "multifocal"
        radius = rng.uniform(12, 24) if big else rng.uniform(7, 13)
        tumours.append((c, radius / mm))
        rel = src - c.reshape(3, 1, 1, 1)
        reach = 2 * (1.8 * radius / mm) ** 2
        push = rng.uniform(0.25, 0.45) * np.exp(-(rel**2).sum(axis=0) / reach)
        src -= rel * push

    tissue = {
        k: ndimage.map_coordinates(anatomy[k], src * mm, order=1, cval=0.0)
        for k in ("gm", "wm", "csf")
    }
    brain = ndimage.map_coordinates(anatomy["brain"].astype(np.float32), src * mm, order=1) > 0.5
    for k in tissue:
        tissue[k] *= brain

    seg = np.zeros(shape, np.uint8)
    extra: dict[str, np.ndarray] = {}
    for c, radius in tumours:
        core_d = _lobulated_distance(rng, coords, c, radius, shape)
        core = (core_d < 1.0) & brain
        oedema_reach = rng.uniform(1.5, 2.4)
        oed_d = _lobulated_distance(rng, coords, c, radius * oedema_reach, shape)
        oedema = (oed_d < 1.0) & brain & ((tissue["wm"] > 0.25) | core) & ~core
        seg[oedema & (seg == 0)] = OEDEMA
        if case_type == "lgg":
            seg[core] = NECROSIS  # BraTS labels non-enhancing core 1 as well
            extra.setdefault("nonenhancing", np.zeros(shape, np.float32))[core] = 1.0
        else:
            necrotic_frac = rng.uniform(0.35, 0.7)
            necrosis = core & (core_d < necrotic_frac)
            seg[core] = ENHANCING
            seg[necrosis] = NECROSIS
            extra.setdefault("necrosis", np.zeros(shape, np.float32))[necrosis] = 1.0
            extra.setdefault("enhancing", np.zeros(shape, np.float32))[core & ~necrosis] = 1.0
        # Oedema is strongest next to the core and fades towards its edge.
        fade = np.clip(1.2 - 0.8 * oed_d, 0.2, 1.0)
        extra.setdefault("oedema", np.zeros(shape, np.float32))[oedema] = fade[oedema]

    # Mimics: white-matter hyperintensities around the ventricles and in deep white matter.
    ventricles = (tissue["csf"] > 0.6) & (depth > 25.0)
    near_vent = ndimage.distance_transform_edt(~ventricles) * mm
    load = rng.uniform(0.3, 1.2)
    wmh_field = _smooth_field(rng, shape, 24)
    wmh = (tissue["wm"] > 0.5) & (
        ((near_vent < rng.uniform(3, 8)) & (wmh_field > 0.3 - load)) | (wmh_field > 2.6 - load)
    )
    extra["wmh"] = (wmh & (seg == 0)).astype(np.float32) * rng.uniform(0.6, 1.0)
    # Enhancing vessels on the brain surface and choroid plexus in the ventricles.
    vessel_field = _smooth_field(rng, shape, 30)
    vessels = (np.abs(vessel_field) < 0.05) & (depth < 6.0) & brain
    vessels |= ventricles & (_smooth_field(rng, shape, 20) > 1.6)
    extra["vessel"] = vessels.astype(np.float32)

    fractions = dict(tissue)
    lesion_total = np.zeros(shape, np.float32)
    for frac in extra.values():
        lesion_total = np.maximum(lesion_total, frac)
    for k in fractions:
        fractions[k] = fractions[k] * (1 - lesion_total)
    fractions.update(extra)

    images = {}
    cortex_texture = 0.05 * _smooth_field(rng, shape, 40)
    lesion_texture = 0.08 * _smooth_field(rng, shape, 30)
    for s, name in enumerate(SEQUENCES):
        signal = np.zeros(shape, np.float32)
        for tissue_name, frac in fractions.items():
            mean = CONTRAST[tissue_name][s] * rng.uniform(0.92, 1.08)
            if tissue_name == "oedema" and name in ("t2", "flair"):
                mean = CONTRAST["wm"][s] + (mean - CONTRAST["wm"][s]) * rng.uniform(0.6, 1.1)
            if tissue_name in ("gm",):
                mean = mean * (1 + cortex_texture)
            if tissue_name in ("oedema", "necrosis", "enhancing", "nonenhancing"):
                mean = mean * (1 + lesion_texture)
            signal += frac * mean
        signal = ndimage.gaussian_filter(signal, 0.6 / mm)
        bias = np.exp(rng.uniform(0.12, 0.25) * _smooth_field(rng, shape, 3))
        sigma = rng.uniform(0.025, 0.045)
        noisy = np.hypot(
            signal * bias + sigma * rng.standard_normal(shape, dtype=np.float32),
            sigma * rng.standard_normal(shape, dtype=np.float32),
        )
        scaled = noisy * SCANNER_GAIN[s] * rng.uniform(0.8, 1.25)
        volume = np.where(brain, np.clip(np.round(scaled), 1, 32767), 0).astype(np.int16)
        images[name] = volume
    seg[~brain] = 0
    return SyntheticCase(images, seg, affine, case_type)


def case_id(index: int) -> str:
    """The BraTS 2021 style identifier of case ``index``."""
    return f"BraTS2021_{index:05d}"


def write_case(out_dir: str | os.PathLike, seed: int, index: int, size: str = "full") -> Path:
    """Write case ``index`` of the set ``seed`` to ``out_dir/<case id>/`` (BraTS 2021 names)."""
    case = make_case(seed, index, size)
    folder = Path(out_dir) / case_id(index)
    folder.mkdir(parents=True, exist_ok=True)
    for name, volume in {**case.images, "seg": case.seg}.items():
        header = nib.Nifti1Header()
        header.set_xyzt_units("mm", "sec")
        header.set_data_dtype(volume.dtype)
        image = nib.Nifti1Image(volume, case.affine, header)
        image.set_qform(case.affine, code=1)
        image.set_sform(case.affine, code=1)
        nib.save(image, folder / f"{case_id(index)}_{name}.nii.gz")
    return folder


def write_cases(
    out_dir: str | os.PathLike, n_cases: int, seed: int, size: str = "full"
) -> list[Path]:
    """Write cases ``0 .. n_cases - 1`` of the set ``seed`` in the BraTS 2021 layout.

    Parameters
    ----------
    out_dir
        Folder that receives one sub-folder per case.
    n_cases
        Number of cases.
    seed
        Seed of the set; the same seed gives identical files.
    size
        ``full`` or ``small`` (see :func:`make_case`).

    Returns
    -------
    list of Path
        The case folders.
    """
    if n_cases < 1:
        raise ValueError("--cases must be at least 1")
    return [write_case(out_dir, seed, index, size) for index in range(n_cases)]
