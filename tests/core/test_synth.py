"""Synthetic BraTS-like cases: grid, determinism, case types, contrast physics, families."""

import shutil
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage, stats

from equicam import cli
from equicam.core.anatomy import BRATS_AFFINE, BRATS_SHAPE, load_anatomy
from equicam.core.brats import load_case
from equicam.core.synth import CASE_TYPES, FAMILIES, family_names, make_case
from equicam.core.synth.families import FLAIR_3D
from equicam.core.synth.sequences import draw_protocol, signal
from equicam.core.synth.tissue import TISSUES, draw_tissues, post_contrast_t1
from equicam.core.synth.tumours import draw_volume

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


def test_synth_writes_whole_cases_and_never_over_a_case_already_there(
    synthetic_cases, tmp_path, capsys
):
    out = tmp_path / "data"
    shutil.copytree(synthetic_cases / "BraTS2021_00000", out / "BraTS2021_00000")
    flair = out / "BraTS2021_00000" / "BraTS2021_00000_flair.nii.gz"
    flair.write_bytes(b"the radiologist's own scan")
    argv = ["synth", str(out), "--cases", "2", "--seed", "7", "--size", "small"]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert f"{out / 'BraTS2021_00000'}: already holds files" in error
    assert flair.read_bytes() == b"the radiologist's own scan"
    assert sorted(p.name for p in out.iterdir()) == ["BraTS2021_00000"]  # no half case left

    fresh = tmp_path / "fresh"
    assert cli.main(["synth", str(fresh), "--cases", "1", "--seed", "7", "--size", "small"]) == 0
    assert sorted(p.name for p in fresh.iterdir()) == ["BraTS2021_00000"]
    for name in ("flair", "seg"):
        written = fresh / "BraTS2021_00000" / f"BraTS2021_00000_{name}.nii.gz"
        expected = synthetic_cases / "BraTS2021_00000" / written.name
        assert written.read_bytes() == expected.read_bytes()


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


def test_tumour_appearance_per_sequence():
    """Enhancing rim bright on T1ce; oedema brighter than white matter on FLAIR and T2 (its
    slight darkening on T1 is checked on noise-free signals: partial volume hides it here)."""
    case = make_case(7, 0, "small")
    enhancing, oedema = case.seg == 4, case.seg == 2
    wm = (case.dominant == TISSUES.index("wm")) & _near_tumour(case)
    healthy = (case.images["t1"] > 0) & (case.seg == 0)
    t1ce = case.images["t1ce"]
    assert np.median(t1ce[enhancing]) > np.percentile(t1ce[healthy], 90)
    for m in ("t2", "flair"):
        assert np.median(case.images[m][oedema]) > np.median(case.images[m][wm])


def _ideal_signals(family: str, seed: int) -> dict[str, dict[str, float]]:
    """Noise-free signal of every tissue in every sequence of one case drawn in ``family``."""
    rng = np.random.default_rng(seed)
    look = FAMILIES[family]
    params, r1 = draw_tissues(rng, look.field)
    out = {}
    for name, recipe in look.recipes.items():
        protocol = draw_protocol(
            rng, recipe, csf_t1=params["csf"].t1, contrast=name == "t1ce", snr_scale=1.0
        )
        out[name] = {k: signal(protocol, params[k], r1) for k in TISSUES}
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_orders_tissues_as_each_sequence_should(family):
    """T1: WM > GM > CSF; T2: CSF > GM > WM; FLAIR: CSF darkest; oedema not above WM on T1,
    above it on T2 and FLAIR; T1ce:
    enhancing tumour above WM and brighter relative to WM than on T1; necrosis never enhances."""
    for seed in range(50):
        s = _ideal_signals(family, seed)
        t1, t1ce, t2, flair = s["t1"], s["t1ce"], s["t2"], s["flair"]
        assert t1["wm"] > t1["gm"] > t1["csf"], (seed, t1)
        assert t2["csf"] > t2["gm"] > t2["wm"], (seed, t2)
        assert flair["csf"] < min(flair["wm"], flair["gm"]) / 2, (seed, flair)
        assert flair["oedema"] > 1.3 * flair["wm"], (seed, flair)
        # Oedema is hypo- to iso-intense on T1: never clearly brighter than white matter.
        assert t1["oedema"] < 1.02 * t1["wm"] and t2["oedema"] > 1.3 * t2["wm"], seed
        assert t1ce["enhancing"] > t1ce["wm"], (seed, t1ce)
        assert t1ce["enhancing"] / t1ce["wm"] > t1["enhancing"] / t1["wm"], seed


def test_gadolinium_shortens_t1_of_enhancing_tissue_only():
    params, r1 = draw_tissues(np.random.default_rng(0), 3.0)
    assert post_contrast_t1(params["enhancing"], r1) < params["wm"].t1
    for name in ("gm", "wm", "csf", "necrosis", "cyst", "nonenhancing"):
        assert params[name].gadolinium == 0.0
        assert post_contrast_t1(params[name], r1) == pytest.approx(params[name].t1)


def _near_tumour(case) -> np.ndarray:
    """Within about 16 mm of the tumour: the bias field (up to +-40 %) hardly varies there."""
    return ndimage.binary_dilation(case.seg > 0, iterations=8)


def _median(case, name, tissue, where=True):
    return float(np.median(case.images[name][(case.dominant == TISSUES.index(tissue)) & where]))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_generated_images_show_csf_and_the_enhancing_rim_as_expected(family):
    """On the written intensities: CSF dark on FLAIR and T1, bright on T2; the enhancing rim
    brighter (against white matter) on T1ce than on T1."""
    case = make_case(7, 0, "small", family)
    assert case.family == family
    for name, ratio in (("t1", 0.8), ("flair", 0.8)):
        assert _median(case, name, "csf") < ratio * _median(case, name, "wm"), name
    assert _median(case, "t2", "csf") > 1.2 * _median(case, "t2", "wm")
    near = _near_tumour(case)
    rim_t1ce = _median(case, "t1ce", "enhancing") / _median(case, "t1ce", "wm", near)
    rim_t1 = _median(case, "t1", "enhancing") / _median(case, "t1", "wm", near)
    assert rim_t1ce > 1.1 and rim_t1ce > rim_t1 + 0.2


def test_one_patient_imaged_in_two_families_keeps_its_anatomy_but_not_its_look():
    a = make_case(7, 1, "small", "clinical-1.5T")
    b = make_case(7, 1, "small", "research-3T")
    np.testing.assert_array_equal(a.seg, b.seg)
    assert a.protocols["t1"].kind == "se" and b.protocols["t1"].kind == "spgr"
    assert a.protocols["flair"].thickness >= 5 and b.protocols["flair"].thickness < 1.5
    brain = a.images["t1"] > 0
    for name in ("t1", "flair"):
        za, zb = (stats.zscore(c.images[name][brain].astype(float)) for c in (a, b))
        assert np.corrcoef(za, zb)[0, 1] < 0.95, name


def test_a_family_variant_changes_only_its_own_factor():
    """An ablation images a patient in a family with one factor changed (FLAIR taken 3-D):
    the sequences before FLAIR are the family's own, voxel for voxel."""
    base = FAMILIES["clinical-3T"]
    variant = replace(base, name="3-D FLAIR", recipes={**base.recipes, "flair": FLAIR_3D})
    a = make_case(7, 1, "small", "clinical-3T")
    b = make_case(7, 1, "small", variant)
    assert b.family == "3-D FLAIR" and b.protocols["flair"].thickness < 1.5
    for name in ("t1", "t1ce", "t2"):
        np.testing.assert_array_equal(a.images[name], b.images[name])
    assert not np.array_equal(a.images["flair"], b.images["flair"])


def test_the_train_mixture_draws_both_training_families_and_never_the_held_out_one():
    drawn = {make_case(3, i, "small", "train").family for i in (0, 1, 2, 3, 4, 5)}
    assert drawn == {"clinical-1.5T", "research-3T"}


def test_families_on_the_command_line_are_the_generator_s():
    assert set(cli.FAMILIES) == set(family_names())
    with pytest.raises(ValueError, match="unknown family"):
        make_case(0, 0, "small", "7T")


def test_tumour_sizes_span_brats_with_small_lesions_over_represented():
    volumes = np.array([draw_volume(np.random.default_rng(s)) for s in range(2000)])
    assert volumes.min() >= 3.0 and volumes.max() <= 250.0
    assert 0.33 < np.mean(volumes < 30) < 0.5
    assert np.mean(volumes > 100) > 0.15
