"""Synthetic BraTS-like cases: grid, determinism, case types, layout on disk."""

import nibabel as nib
import numpy as np
import pytest

from equicam.core.anatomy import BRATS_AFFINE, BRATS_SHAPE, load_anatomy
from equicam.core.brats import load_case
from equicam.core.synth import CASE_TYPES, make_case

SEQUENCES = ("t1", "t1ce", "t2", "flair")


def _files(folder):
    return {p.name.split("_")[-1].split(".")[0]: nib.load(p) for p in folder.glob("*.nii.gz")}


def test_same_seed_gives_identical_files_and_another_seed_differs(synthetic_cases):
    written = _files(synthetic_cases / "BraTS2021_00000")
    again = make_case(7, 0, "small")
    for name in SEQUENCES:
        np.testing.assert_array_equal(np.asarray(written[name].dataobj), again.images[name])
    np.testing.assert_array_equal(np.asarray(written["seg"].dataobj), again.seg)
    other = make_case(8, 0, "small")
    assert not np.array_equal(other.images["flair"], again.images["flair"])


def test_small_cases_use_the_brats_orientation_on_a_2mm_grid(synthetic_cases):
    for folder in synthetic_cases.iterdir():
        files = _files(folder)
        assert sorted(files) == sorted([*SEQUENCES, "seg"])
        for name, image in files.items():
            assert image.shape == (120, 120, 78)
            assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
            np.testing.assert_allclose(image.header.get_zooms(), (2.0, 2.0, 2.0))
            assert image.get_data_dtype() == (np.uint8 if name == "seg" else np.int16)


def test_full_grid_is_the_brats_grid():
    anatomy = load_anatomy()
    assert anatomy["gm"].shape == BRATS_SHAPE == (240, 240, 155)
    assert nib.aff2axcodes(BRATS_AFFINE) == ("L", "P", "S")
    # The template brain fits inside the field of view with a margin.
    brain = anatomy["brain"]
    assert not brain[[0, -1]].any() and not brain[:, [0, -1]].any()
    assert 1.0e6 < brain.sum() < 2.0e6  # about 1.1-1.9 litres at 1 mm


def test_background_is_exactly_zero_and_the_brain_is_not(synthetic_cases):
    for folder in synthetic_cases.iterdir():
        case = load_case(folder)
        masks = [v != 0 for v in case.images.values()]
        for mask in masks[1:]:
            np.testing.assert_array_equal(mask, masks[0])
        assert 100_000 < masks[0].sum() < 300_000  # brain voxels at 2 mm
        assert not np.any(case.seg[~masks[0]])


@pytest.mark.parametrize(
    ("index", "labels"),
    [(0, {0, 1, 2, 3}), (6, {0, 1, 2}), (8, {0, 1, 2, 3}), (9, {0})],
)
def test_case_types_have_their_tumour_regions(synthetic_cases, index, labels):
    case = load_case(synthetic_cases / f"BraTS2021_{index:05d}")
    assert set(np.unique(case.seg).tolist()) == labels
    assert CASE_TYPES[index] == {0: "hgg", 6: "lgg", 8: "multifocal", 9: "healthy"}[index]


def test_tumour_appearance_per_sequence(synthetic_cases):
    """Enhancing rim bright on T1ce; oedema brighter than white matter on FLAIR and T2."""
    case = load_case(synthetic_cases / "BraTS2021_00000")
    enhancing, oedema = case.seg == 3, case.seg == 2
    healthy = (case.images["t1"] > 0) & (case.seg == 0)
    t1ce = case.images["t1ce"]
    assert np.median(t1ce[enhancing]) > np.percentile(t1ce[healthy], 90)
    for m in ("t2", "flair"):
        assert np.median(case.images[m][oedema]) > np.median(case.images[m][healthy])
    assert np.median(case.images["t1"][oedema]) < np.median(case.images["t1"][healthy])
