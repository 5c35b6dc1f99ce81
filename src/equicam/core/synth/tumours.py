"""Tumours: how big, where, what shape, and which voxels of which region.

Sizes: whole-tumour volumes in BraTS 2021 centre near 90-96 cm3 (mean 96.0, median 89.3,
[PS], an unreviewed summary) and run from a few to a few hundred cm3. CAMs fail on small
lesions first, so small ones are drawn on purpose more often than BraTS holds them: 40 % of
tumour patients log-uniform in 3-30 cm3, the rest log-uniform in 30-250 cm3.

Shapes: lobulated (necrosis inside an enhancing rim), cystic (a fluid cavity, labelled as
necrosis as BraTS does, inside a thin rim), infiltrative (a small core in wide oedema) and
low-grade (a non-enhancing core, no necrosis); multifocal cases carry 2-3 foci.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from equicam.core.synth.fields import smooth_field

SMALL_SHARE = 0.4
SMALL_RANGE = (3.0, 30.0)  # cm3
LARGE_RANGE = (30.0, 250.0)  # cm3
# Volume of the generated region over that of its oedema sphere (white matter only, lobulation,
# stretching); measured on generated 1 mm cases so that drawn and made volumes agree.
FILL = 1.2
# BraTS 2021 labels on disk.
NECROSIS, OEDEMA, ENHANCING = 1, 2, 4


@dataclass(frozen=True)
class Tumour:
    """One focus, in output voxels.

    Attributes
    ----------
    centre
        ``(3,)`` voxel coordinates.
    core_radius
        Radius of the core, voxels.
    reach
        Oedema radius over core radius.
    style
        ``lobulated``, ``cystic``, ``infiltrative`` or ``low-grade``.
    """

    centre: np.ndarray
    core_radius: float
    reach: float
    style: str


def draw_volume(rng: np.random.Generator) -> float:
    """A whole-tumour volume in cm3 (see the module docstring)."""
    low, high = SMALL_RANGE if rng.random() < SMALL_SHARE else LARGE_RANGE
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _style(rng: np.random.Generator, case_type: str) -> tuple[str, float]:
    if case_type == "lgg":
        return "low-grade", rng.uniform(1.2, 1.8)
    draw = rng.random()
    if draw < 0.2:
        return "cystic", rng.uniform(1.3, 2.0)
    if draw < 0.4:
        return "infiltrative", rng.uniform(2.2, 3.0)
    return "lobulated", rng.uniform(1.5, 2.4)


def plan_tumours(
    rng: np.random.Generator, case_type: str, wm: np.ndarray, depth: np.ndarray, mm: float
) -> tuple[list[Tumour], float]:
    """Draw the foci of one case.

    Parameters
    ----------
    rng
        Random generator.
    case_type
        ``hgg``, ``lgg``, ``multifocal`` or ``healthy``.
    wm
        White-matter probability on the output grid.
    depth
        Distance to the brain's surface, mm.
    mm
        Voxel size, mm.

    Returns
    -------
    (list of Tumour, float)
        The foci and the whole-tumour volume aimed at, cm3 (0 for tumour-free cases).
    """
    if case_type == "healthy":
        return [], 0.0
    volume = draw_volume(rng)
    n = int(rng.integers(2, 4)) if case_type == "multifocal" else 1
    shares = rng.dirichlet(np.full(n, 3.0))
    tumours = []
    for share in shares:
        style, reach = _style(rng, case_type)
        oedema_mm = (3 * volume * share * 1000.0 / (4 * np.pi * FILL)) ** (1 / 3)
        min_depth = min(25.0, 0.5 * oedema_mm + 6.0)
        candidates = np.argwhere((wm > 0.5) & (depth > min_depth))
        centre = candidates[rng.integers(len(candidates))].astype(np.float32)
        tumours.append(Tumour(centre, oedema_mm / reach / mm, reach, style))
    return tumours, volume


def _box(centre: np.ndarray, radius: float, shape) -> tuple[slice, ...]:
    return tuple(
        slice(max(0, int(c - radius)), min(s, int(c + radius) + 2))
        for c, s in zip(centre, shape, strict=True)
    )


def _lobulated_distance(rng, box, centre, radius, amplitude) -> np.ndarray:
    """Distance to ``centre`` in radii inside ``box``, perturbed so the outline is lobulated."""
    coords = np.mgrid[box].astype(np.float32)
    rel = coords - centre.reshape(3, 1, 1, 1)
    stretch = rng.uniform(0.75, 1.3, size=3).astype(np.float32).reshape(3, 1, 1, 1)
    dist = np.sqrt(((rel / stretch) ** 2).sum(axis=0)) / radius
    shape = dist.shape
    return dist * (1.0 + amplitude * smooth_field(rng, shape, max(4, round(max(shape) / 6))))


def grow_tumours(
    rng: np.random.Generator,
    tumours: list[Tumour],
    brain: np.ndarray,
    wm: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels and lesion tissue fractions of ``tumours`` on the output grid.

    Returns
    -------
    (numpy.ndarray, dict)
        uint8 labels (:data:`NECROSIS`, :data:`OEDEMA`, :data:`ENHANCING`) and lesion tissue
        name -> float32 fraction map (oedema, necrosis, cyst, enhancing, nonenhancing).
    """
    shape = brain.shape
    seg = np.zeros(shape, np.uint8)
    fractions: dict[str, np.ndarray] = {}

    def put(name: str, box, where: np.ndarray, value) -> None:
        target = fractions.setdefault(name, np.zeros(shape, np.float32))[box]
        target[where] = np.maximum(target[where], value if np.isscalar(value) else value[where])

    for t in tumours:
        reach_vox = t.core_radius * t.reach
        box = _box(t.centre, reach_vox * 1.8 + 3, shape)
        inside, white = brain[box], wm[box]
        core_d = _lobulated_distance(rng, box, t.centre, t.core_radius, 0.28)
        core = (core_d < 1.0) & inside
        amplitude = 0.45 if t.style == "infiltrative" else 0.28
        oed_d = _lobulated_distance(rng, box, t.centre, reach_vox, amplitude)
        oedema = (oed_d < 1.0) & inside & ((white > 0.25) | core) & ~core
        labels = seg[box]
        labels[oedema & (labels == 0)] = OEDEMA
        if t.style == "low-grade":
            labels[core] = NECROSIS  # BraTS labels a non-enhancing core 1 as well
            put("nonenhancing", box, core, 1.0)
        else:
            low, high = {"cystic": (0.6, 0.85)}.get(t.style, (0.35, 0.7))
            cavity = core & (core_d < rng.uniform(low, high))
            labels[core] = ENHANCING
            labels[cavity] = NECROSIS
            put("cyst" if t.style == "cystic" else "necrosis", box, cavity, 1.0)
            put("enhancing", box, core & ~cavity, 1.0)
        # Oedema is strongest next to the core and fades towards its edge.
        fade = np.clip(1.2 - 0.8 * oed_d, 0.2, 1.0)
        put("oedema", box, oedema, fade)
    return seg, fractions
