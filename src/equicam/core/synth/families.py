"""Appearance families: field strength, sequences and acquisition, like sites of a study.

A network trained on some families and tested on another meets a scanner it never saw. The
sequence ranges come from ``shared/notes/mr-physics.md`` section 3: [RK] radiologykey.com
standard 1.5 T / 3.0 T protocols, [CB] MRC-CBU imaging sequences (MPRAGE, T2 TSE), [IRS]
PMC2905147 (3-D IR-SPGR / spoiled gradient echo), [Me15] Menze et al. 2015 (BraTS native slice
thickness: 2-D T1, T2, FLAIR 1-6 mm, 3-D T1Gd about 1 mm). SNR: [Sp16] Springer et al. 2016 at
3 T (2-D T2 TSE 22 +- 8, 2-D FLAIR 25 +- 8, 3-D FLAIR 29 +- 11); no 1.5 T figure was found, so
1.5 T families halve them (ASSUMPTION: SNR roughly proportional to field); T1 sequences
(ASSUMPTION) take the T2 TSE figure when 2-D and the 3-D FLAIR figure when 3-D.
Bias fields: smooth and multiplicative, 20 % = 0.90-1.10, 40 % = 0.80-1.20 [BW].
"""

from __future__ import annotations

from dataclasses import dataclass

from equicam.core.synth.sequences import Recipe

SNR_2D = (22.0, 8.0)  # [Sp16] 2-D T2 TSE, 3 T
SNR_FLAIR_2D = (25.0, 8.0)  # [Sp16]
SNR_3D = (29.0, 11.0)  # [Sp16] 3-D FLAIR

SE_T1_15 = Recipe("se", (450, 600), (8, 15), (5, 6), SNR_2D, source="[RK] TR 500, TE min, 6 mm")
SE_T1_3 = Recipe("se", (450, 650), (8, 12), (4, 5), SNR_2D, source="[RK] TR 500, TE min, 5 mm")
# MPRAGE: its readout train, not its inversion time, sets the grey-white contrast, and pure
# inversion recovery at its TI would null grey matter; the notes' first approximation is a
# spoiled gradient echo, here with a short readout TR and a flip above the Ernst angle.
MPRAGE = Recipe(
    "spgr", (7, 10), (2, 3), (0.9, 1.1), SNR_3D, flip=(12, 18), source="[CB] 3-D, TE 2-3 ms"
)
SPGR = Recipe(
    "spgr", (10, 14), (2, 4), (1.0, 1.5), SNR_3D, flip=(12, 20), source="[IRS] TR 12, TE 2, 15 deg"
)
T2_15 = Recipe("se", (3000, 4000), (85, 100), (5, 6), SNR_2D, source="[RK] TR 3000, TE 88, 6 mm")
T2_3 = Recipe("se", (4500, 5100), (80, 105), (3, 5), SNR_2D, source="[RK][CB] TR 4850-5060")
FLAIR_15 = Recipe(
    "flair", (8000, 9600), (110, 130), (5, 6), SNR_FLAIR_2D, source="[RK] TR 8800, TE 120, 5 mm"
)
FLAIR_3 = Recipe(
    "flair", (10000, 11500), (120, 140), (3, 5), SNR_FLAIR_2D, source="[RK] TR 11000, TE 130"
)
FLAIR_3D = Recipe(
    "flair", (10000, 11000), (120, 140), (1.0, 1.2), SNR_3D, source="[RK] timing, 3-D [Sp16]"
)


@dataclass(frozen=True)
class Family:
    """One appearance family.

    Attributes
    ----------
    name
        What ``--family`` takes.
    field
        Field strength, tesla.
    recipes
        Sequence name (t1, t1ce, t2, flair) -> :class:`Recipe`.
    bias
        Range of the bias field's half-amplitude (0.2 = 0.80-1.20).
    misregistration
        Largest shift between a sequence and T1ce, mm.
    residue
        Probability that skull stripping leaves a rim of dura and CSF outside the brain.
    description
        One line for ``--help`` and the README.
    """

    name: str
    field: float
    recipes: dict
    bias: tuple[float, float]
    misregistration: float
    residue: float
    description: str


FAMILIES = {
    f.name: f
    for f in (
        Family(
            "clinical-1.5T",
            1.5,
            {"t1": SE_T1_15, "t1ce": SPGR, "t2": T2_15, "flair": FLAIR_15},
            (0.0, 0.2),
            1.0,
            0.3,
            "1.5 T, 2-D spin-echo T1, T2 and FLAIR at 5-6 mm, 3-D gradient-echo T1ce",
        ),
        Family(
            "research-3T",
            3.0,
            {"t1": MPRAGE, "t1ce": MPRAGE, "t2": T2_3, "flair": FLAIR_3D},
            (0.1, 0.4),
            0.5,
            0.2,
            "3 T, 3-D MPRAGE-like T1 and T1ce at 1 mm, 3-D FLAIR, 2-D T2 at 3-5 mm",
        ),
        Family(
            "clinical-3T",
            3.0,
            {"t1": SE_T1_3, "t1ce": SPGR, "t2": T2_3, "flair": FLAIR_3},
            (0.1, 0.4),
            1.5,
            0.5,
            "3 T, 2-D spin-echo T1, T2 and FLAIR at 3-5 mm, 3-D gradient-echo T1ce",
        ),
    )
}
# Mixtures: each case draws one of these families.
MIXTURES = {"train": ("clinical-1.5T", "research-3T")}
HELD_OUT = "clinical-3T"


def family_names() -> tuple[str, ...]:
    """Every name ``--family`` accepts: the families, then the mixtures."""
    return (*FAMILIES, *MIXTURES)
