"""Per-case tissue relaxation times, proton density and gadolinium, from published ranges.

Every range cites its source (keys as in ``shared/notes/mr-physics.md``):

- [BW] BrainWeb tissue parameters (1.5 T); [Wr08] MAGMA 2008;21:121; [St05] Stanisz et al.,
  MRM 2005; [Wa99] Wansapura et al., JMRI 1999; [Lu05] Lu et al., JMRI 2005 (CSF T1 at 3 T,
  and 3 T vs 1.5 T: T1 +14-30 %); [Pi09] Piechnik, MRM 2009 (CSF T2 at 3 T); [Er93] Ernst 1993
  (water content); [Sh06] Sharma et al., JMRI 2006 (blood T1); [At] Atlas, MRI of the Brain and
  Spine, Tab 2.1 (venous and arterial blood T2);
- tumour as a ratio to normal white matter: [dB] de Blank et al., MR fingerprinting of brain
  tumours (oedema T1 x1.35, T2 x1.71; solid tumour of all grades x1.54, x1.61; high grade
  x1.99, x2.37); proton density raised in lesions, no number [RKb];
- gadolinium: ``1/T1post = 1/T1 + r1 C``; relaxivity r1 [Sz19] Szomolanyi et al., Invest Radiol
  2019 (1.5 T 3.32-4.78, 3 T 2.72-4.97 /mM/s); T1 drop in untreated glioblastoma [Fr20]
  (enhancing 838 +- 210 ms, oedema 123 +- 74 ms, normal tissue 32 +- 35 ms, i.e. none).

Where no sourced value exists the choice is marked ASSUMPTION and kept to a mixture of sourced
tissues: necrosis and cysts lie between high-grade tumour and CSF; white-matter
hyperintensities between white matter and oedema; choroid plexus and dura behave as blood.
Where sources disagree (one method measures every tissue low, another high), a case takes one
position inside every range, shared by all tissues, so that a case never mixes one source's
white matter with another's grey matter; each tissue then spreads by +-5 % around it (the notes
suggest up to +-10 %, which reverses the grey-white order of spin-echo T1 at 1.5 T).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (T1 ms range, T2 ms range) of the healthy tissues per field strength; see the module docstring.
HEALTHY = {
    1.5: {
        "wm": ((500.0, 646.0), (70.0, 70.0)),  # [BW], [Wr08]; T2 [BW]
        "gm": ((833.0, 1197.0), (83.0, 83.0)),  # [BW], [Wr08]; T2 [BW]
        # [BW] 2569 ms; 3 T's 3817 ms [Lu05] less 14-30 % [Lu05] gives up to 3348 ms.
        "csf": ((2569.0, 3348.0), (329.0, 329.0)),  # T2 [BW]
        "blood": ((1580.0, 1580.0), (150.0, 235.0)),  # [Sh06]; venous-arterial [At]
    },
    3.0: {
        "wm": ((832.0, 1084.0), (69.0, 79.0)),  # [Wa99], [St05]
        "gm": ((1331.0, 1820.0), (99.0, 110.0)),  # [Wa99], [St05]
        "csf": ((3817.0, 3817.0), (503.0, 503.0)),  # [Lu05], [Pi09]
        "blood": ((1660.0, 1660.0), (80.0, 165.0)),  # [Sh06]; venous-arterial [At]
    },
}
PROTON_DENSITY = {  # [Er93] water content - [BW]
    "wm": (0.65, 0.77),
    "gm": (0.78, 0.86),
    "csf": (0.97, 1.0),
    "blood": (0.78, 0.86),  # ASSUMPTION: no sourced value; taken as grey matter's
}
# Lesion T1 and T2 as ratios to white matter [dB].
RATIOS = {
    "oedema": (1.35, 1.71),
    "nonenhancing": (1.54, 1.61),  # solid tumour, all grades
    "enhancing": (1.99, 2.37),  # solid tumour, high grade
}
RELAXIVITY = {1.5: (3.32, 4.78), 3.0: (2.72, 4.97)}  # r1 /mM/s [Sz19]
ENHANCING_T1_DROP = (838.0, 210.0)  # ms, mean and sd [Fr20]
OEDEMA_T1_DROP = (123.0, 74.0)  # ms [Fr20]
# ASSUMPTION: plasma concentration minutes after a 0.1 mmol/kg dose, below the first-pass
# 2.8-12.6 mM bolus [Ki11].
BLOOD_GADOLINIUM = (0.5, 2.8)  # mM

TISSUES = (
    "gm",
    "wm",
    "csf",
    "oedema",
    "necrosis",
    "cyst",
    "enhancing",
    "nonenhancing",
    "wmh",
    "vessel",
    "choroid",
)


@dataclass(frozen=True)
class Tissue:
    """MR parameters of one tissue in one case.

    Attributes
    ----------
    t1, t2
        Relaxation times before contrast, ms.
    pd
        Proton density, relative to water.
    gadolinium
        Contrast agent concentration after injection, mM (0: does not enhance).
    """

    t1: float
    t2: float
    pd: float
    gadolinium: float = 0.0


def _at(position: float, rng: np.random.Generator, low: float, high: float) -> float:
    """The value at ``position`` (0..1) in [low, high], spread by +-5 %."""
    return float((low + (high - low) * position) * rng.uniform(0.95, 1.05))


def _between(a: Tissue, b: Tissue, u: float) -> Tissue:
    """Geometric interpolation of T1/T2 and linear of PD from ``a`` (u=0) to ``b`` (u=1)."""
    return Tissue(a.t1 ** (1 - u) * b.t1**u, a.t2 ** (1 - u) * b.t2**u, a.pd + (b.pd - a.pd) * u)


def draw_tissues(rng: np.random.Generator, field: float) -> tuple[dict[str, Tissue], float]:
    """Draw every tissue of :data:`TISSUES` for one case at ``field`` tesla (1.5 or 3.0).

    Returns
    -------
    (dict, float)
        Tissue name -> :class:`Tissue`, and the relaxivity r1 (/mM/s) of the agent used.
    """
    at_t1, at_t2, at_pd = rng.uniform(size=3)
    base = {
        name: Tissue(
            _at(at_t1, rng, *t1), _at(at_t2, rng, *t2), _at(at_pd, rng, *PROTON_DENSITY[name])
        )
        for name, (t1, t2) in HEALTHY[field].items()
    }
    wm, csf = base["wm"], base["csf"]
    r1 = float(rng.uniform(*RELAXIVITY[field]))
    out = {k: base[k] for k in ("gm", "wm", "csf")}
    for name, (r_t1, r_t2) in RATIOS.items():
        # ASSUMPTION: lesion PD 5-20 % of the way from WM to CSF ([RKb]: raised, no number);
        # more makes oedema as bright as white matter on spin-echo T1, which it is not.
        pd = wm.pd + (csf.pd - wm.pd) * rng.uniform(0.05, 0.2)
        out[name] = Tissue(
            wm.t1 * r_t1 * rng.uniform(0.95, 1.05), wm.t2 * r_t2 * rng.uniform(0.95, 1.05), pd
        )
    hg = out["enhancing"]
    out["necrosis"] = _between(hg, csf, rng.uniform(0.3, 0.8))  # ASSUMPTION (n/f)
    out["cyst"] = _between(hg, csf, rng.uniform(0.8, 1.0))  # ASSUMPTION (n/f)
    out["wmh"] = _between(wm, out["oedema"], rng.uniform(0.5, 1.0))  # ASSUMPTION (n/f)

    def gadolinium_for(tissue: Tissue, drop_ms: float) -> float:
        post = max(tissue.t1 - drop_ms, 50.0)
        return (1.0 / post - 1.0 / tissue.t1) * 1000.0 / r1

    drop = rng.normal(*ENHANCING_T1_DROP)
    # Enhancing tumour is brighter than white matter after contrast [BT18]: its post-contrast
    # T1 below the white matter's.
    drop = max(drop, hg.t1 - 0.9 * wm.t1)
    out["enhancing"] = Tissue(hg.t1, hg.t2, hg.pd, gadolinium_for(hg, drop))
    oed = out["oedema"]
    oedema_drop = float(np.clip(rng.normal(*OEDEMA_T1_DROP), 0.0, None))
    out["oedema"] = Tissue(oed.t1, oed.t2, oed.pd, gadolinium_for(oed, oedema_drop))
    blood_gd = float(rng.uniform(*BLOOD_GADOLINIUM))
    blood = base["blood"]
    out["vessel"] = Tissue(blood.t1, blood.t2, blood.pd, blood_gd)
    out["choroid"] = Tissue(blood.t1, blood.t2, blood.pd, blood_gd)  # ASSUMPTION: as blood
    return out, r1


def post_contrast_t1(tissue: Tissue, r1: float) -> float:
    """``1 / (1/T1 + r1 C)`` in ms, for relaxivity ``r1`` in /mM/s."""
    return 1.0 / (1.0 / tissue.t1 + r1 * tissue.gadolinium / 1000.0)
