"""Synthetic BraTS-like cases built from a real brain, imaged as different sites would.

- :mod:`.fields`: smooth random fields (deformations, textures, bias, shapes);
- :mod:`.tissue`: per-case T1, T2, proton density and gadolinium from published ranges;
- :mod:`.sequences`: the signal equations and the per-case draw of sequence parameters;
- :mod:`.tumours`: tumour sizes, places, shapes and regions;
- :mod:`.acquisition`: blur, thick slices, misregistration, noise, bias, skull stripping;
- :mod:`.families`: appearance families (field strength, sequences, acquisition);
- :mod:`.case`: one case from anatomy to files (``equicam synth``).
"""

from equicam.core.synth.case import (
    CASE_TYPES,
    DEFAULT_FAMILY,
    SEQUENCES,
    SyntheticCase,
    case_id,
    make_case,
    write_case,
    write_cases,
)
from equicam.core.synth.families import FAMILIES, HELD_OUT, MIXTURES, family_names

__all__ = [
    "CASE_TYPES",
    "DEFAULT_FAMILY",
    "FAMILIES",
    "HELD_OUT",
    "MIXTURES",
    "SEQUENCES",
    "SyntheticCase",
    "case_id",
    "family_names",
    "make_case",
    "write_case",
    "write_cases",
]
