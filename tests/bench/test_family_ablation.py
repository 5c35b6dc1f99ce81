"""bench.family_ablation: each variant moves one factor of the held-out family."""

from dataclasses import fields

from bench.family_ablation import VARIANTS, patient_table
from equicam.core.synth import FAMILIES, HELD_OUT


def test_each_variant_changes_one_factor_of_the_held_out_family():
    base = FAMILIES[HELD_OUT]
    for key, variant in VARIANTS.items():
        if key in FAMILIES:
            assert variant is FAMILIES[key]
            continue
        changed = {
            f.name
            for f in fields(base)
            if f.name not in ("name", "description")
            and getattr(variant, f.name) != getattr(base, f.name)
        }
        if changed == {"recipes"}:
            changed = {k for k in base.recipes if variant.recipes[k] != base.recipes[k]}
        assert len(changed) == 1 or changed == {"t1", "t1ce"}, (key, changed)


def test_the_patient_table_marks_a_missed_seed_and_shows_tumour_free_false_positives():
    rows = {
        "a": {
            "P1": {"cm3": 12.0, "dice": 0.5, "hit": True, "fp_cm3": 1.0},
            "P2": {"cm3": 0.0, "dice": 0.0, "hit": False, "fp_cm3": 7.25},
        },
        "b": {
            "P1": {"cm3": 12.0, "dice": 0.0, "hit": False, "fp_cm3": 30.0},
            "P2": {"cm3": 0.0, "dice": 0.0, "hit": False, "fp_cm3": 0.0},
        },
    }
    lines = patient_table(rows).splitlines()
    assert lines[2] == "| P2 | 0.0 | 7.2 | 0.0 |"
    assert lines[3] == "| P1 | 12.0 | 0.50 | 0.00* |"
