"""BraTS I/O: every layout, the display geometry and its round trip, every bad input."""

import gzip
import warnings

import nibabel as nib
import numpy as np
import pytest

from equicam.core.brats import (
    CaseError,
    CaseWarning,
    find_case,
    find_cases,
    load_case,
    save_volume,
)
from tests.conftest import BRATS_LPS, MODALITY_VALUES, raw_labels, write_case

LAYOUTS = ["brats2021", "brats2023", "decathlon"]


def _case_files(root, layout, ext):
    if layout == "decathlon":
        return [root / "imagesTr" / f"Case_001{ext}", root / "labelsTr" / f"Case_001{ext}"]
    return sorted(root.iterdir())


def _expected_seg(shape, affine):
    """The normalised labels of write_case's pattern, in display order."""
    seg = np.zeros(shape, np.uint8)
    seg[2:4, 2:4, 2:4], seg[4:6, 2:4, 2:4], seg[6:8, 2:4, 2:4] = 1, 2, 3
    start = nib.orientations.io_orientation(affine)
    to_display = nib.orientations.ornt_transform(start, nib.orientations.axcodes2ornt("SPL"))
    return nib.orientations.apply_orientation(seg, to_display)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_from_the_folder_and_from_each_file(tmp_path, layout, ext):
    root = write_case(tmp_path / "case", layout=layout, ext=ext)
    paths = _case_files(root, layout, ext)
    if layout != "decathlon":
        paths.append(root)
    assert len(paths) >= 2
    for path in paths:
        case = load_case(path)
        assert case.case_id == "Case_001"
        assert case.files.layout == layout
        assert sorted(case.images) == ["flair", "t1", "t1ce", "t2"]
        for m, volume in case.images.items():
            assert volume.dtype == np.float32 and volume.shape == (8, 10, 12)
            assert volume.min() == MODALITY_VALUES[m]
        np.testing.assert_array_equal(case.seg, _expected_seg((12, 10, 8), BRATS_LPS))
        np.testing.assert_array_equal(case.whole_tumour, case.seg > 0)


def test_find_cases_walks_nested_folders_of_mixed_layouts(tmp_path):
    write_case(tmp_path / "2021" / "A", layout="brats2021", case_id="BraTS2021_00002")
    write_case(tmp_path / "2023" / "deep" / "B", layout="brats2023", case_id="BraTS-GLI-00001-000")
    write_case(tmp_path / "msd", layout="decathlon", case_id="BRATS_003")
    write_case(tmp_path / "2021" / "C", layout="brats2021", case_id="BraTS2021_00001", seg=False)
    cases = find_cases(tmp_path)
    assert [c.case_id for c in cases] == [
        "BRATS_003",
        "BraTS-GLI-00001-000",
        "BraTS2021_00001",
        "BraTS2021_00002",
    ]
    assert [c.seg is None for c in cases] == [False, False, True, False]


# Display order is (S, P, L): axis 0 inferior->superior, 1 anterior->posterior, 2 right->left.
ORIENTATIONS = {
    "brats_lps": BRATS_LPS,
    "ras": np.diag([1.0, 1.0, 1.0, 1.0]),
    "sagittal_psr": np.array([[0, 0, 1.0, -5], [-1.0, 0, 0, 10], [0, 1.0, 0, -3], [0, 0, 0, 1]]),
    "anisotropic": np.diag([0.9, -0.9, 3.0, 1.0]),
}


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_display_orientation_and_exact_round_trip(tmp_path, name):
    affine = ORIENTATIONS[name]
    root = write_case(tmp_path / "case", affine=affine, shape=(12, 10, 8))
    case = load_case(root)

    # A marker in the most superior, most anterior, most right-hand voxel of the file...
    flair = nib.load(next(root.glob("*_flair.nii.gz")))
    data = np.asarray(flair.dataobj).copy()
    world = np.array([affine @ np.r_[ijk, 1] for ijk in np.ndindex(data.shape)])[:, :3]
    target = np.lexsort((-world[:, 1], -world[:, 0], world[:, 2]))[-1]  # max S, then R, then A
    ijk = np.unravel_index(target, data.shape)
    data[ijk] = 999
    nib.save(nib.Nifti1Image(data, affine), next(root.glob("*_flair.nii.gz")))
    case = load_case(root)
    # ...lands in the last slice (superior); display spacing follows the axes.
    z, _, _ = np.argwhere(case.images["flair"] == 999)[0]
    assert z == case.images["flair"].shape[0] - 1
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(sorted(case.spacing), sorted(zooms), rtol=1e-6)
    if name == "anisotropic":
        np.testing.assert_allclose(case.spacing, (3.0, 0.9, 0.9), rtol=1e-6)

    out = save_volume(case.seg, case.geometry, tmp_path / "mask.nii.gz")
    saved = nib.load(out)
    np.testing.assert_array_equal(saved.affine, flair.affine)  # bit-exact, as read
    np.testing.assert_allclose(saved.affine, affine, atol=1e-6)
    assert nib.aff2axcodes(saved.affine) == nib.aff2axcodes(affine)
    assert saved.shape == (12, 10, 8)
    expected = np.where(
        raw_labels((12, 10, 8), "brats2021") == 4, 3, raw_labels((12, 10, 8), "brats2021")
    )
    np.testing.assert_array_equal(np.asarray(saved.dataobj), expected)
    assert saved.get_data_dtype() == np.uint8


def test_oblique_scan_loads_with_a_warning_and_round_trips(tmp_path):
    angle = 0.2
    affine = np.eye(4)
    affine[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    root = write_case(tmp_path / "case", affine=affine)
    with pytest.warns(CaseWarning, match="oblique"):
        case = load_case(root)
    saved = nib.load(save_volume(case.seg, case.geometry, tmp_path / "mask.nii.gz"))
    np.testing.assert_allclose(saved.affine, affine, atol=1e-6)


def test_a_missing_modality_loads_the_rest_with_a_warning(tmp_path):
    root = write_case(tmp_path / "case", modalities=("t1", "t2", "flair"))
    with pytest.warns(CaseWarning, match="no t1ce file"):
        case = load_case(root)
    assert sorted(case.images) == ["flair", "t1", "t2"]


def test_a_case_without_any_requested_modality_is_an_error(tmp_path):
    root = write_case(tmp_path / "case", modalities=("t1",))
    with pytest.raises(CaseError, match="has none of"):
        load_case(root, modalities=("flair",))


def _replace(root, name, array, affine=BRATS_LPS, suffix=".nii.gz"):
    path = next(root.glob(f"*_{name}{suffix}"))
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


BAD_VOLUMES = {
    "2-D": (np.ones((12, 10), np.int16), "must be a 3-D volume"),
    "5-D": (np.ones((12, 10, 8, 1, 2), np.int16), "must be a 3-D volume"),
    "NaN": (np.where(np.eye(12, 10)[..., None] > 0, np.nan, 1.0) * np.ones(8), "NaN or infinite"),
    "Inf": (np.where(np.eye(12, 10)[..., None] > 0, np.inf, 1.0) * np.ones(8), "NaN or infinite"),
    "empty": (np.zeros((12, 10, 8), np.int16), "empty"),
    "constant": (np.full((12, 10, 8), 5, np.int16), "constant"),
    "other shape": (
        np.arange(1080, dtype=np.int16).reshape(12, 10, 9),
        r"shape \(12, 10, 9\) differs",
    ),
}


@pytest.mark.parametrize("bad", BAD_VOLUMES)
def test_bad_volumes_are_refused_naming_the_file(tmp_path, bad):
    root = write_case(tmp_path / "case")
    array, message = BAD_VOLUMES[bad]
    path = _replace(root, "t2", array.astype(np.float32) if bad in ("NaN", "Inf") else array)
    with pytest.raises(CaseError, match=message) as error:
        load_case(root)
    assert str(path) in str(error.value)


def test_modalities_with_different_affines_are_refused(tmp_path):
    root = write_case(tmp_path / "case")
    shifted = BRATS_LPS.copy()
    shifted[0, 3] += 2.0
    volume = np.asarray(nib.load(next(root.glob("*_t1ce.nii.gz"))).dataobj)
    path = _replace(root, "t1ce", volume, affine=shifted)
    with pytest.raises(CaseError, match="not co-registered") as error:
        load_case(root)
    assert str(path) in str(error.value)


def test_truncated_and_corrupt_files_are_refused(tmp_path):
    root = write_case(tmp_path / "case")
    flair = next(root.glob("*_flair.nii.gz"))
    content = flair.read_bytes()
    flair.write_bytes(content[: len(content) // 2])
    with pytest.raises(CaseError, match="truncated or corrupt") as error:
        load_case(root)
    assert str(flair) in str(error.value)

    root = write_case(tmp_path / "case2")
    t1 = next(root.glob("*_t1.nii.gz"))
    t1.write_bytes(b"this is not a NIfTI file at all" * 20)
    with pytest.raises(CaseError, match="truncated or corrupt"):
        load_case(root)

    root = write_case(tmp_path / "case3", ext=".nii")
    t2 = next(root.glob("*_t2.nii"))
    t2.write_bytes(gzip.compress(b"garbage") + b"\0" * 400)
    with pytest.raises(CaseError, match=r"t2\.nii.*truncated or corrupt"):
        load_case(root)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.full((12, 10, 8), 5, np.uint8), r"labels \[5\]"),
        (np.full((12, 10, 8), 0.5, np.float32), "non-integer"),
        (np.zeros((12, 10, 7), np.uint8), r"shape \(12, 10, 7\) differs"),
    ],
)
def test_bad_segmentations_are_refused(tmp_path, labels, message):
    root = write_case(tmp_path / "case")
    path = _replace(root, "seg", labels)
    with pytest.raises(CaseError, match=message) as error:
        load_case(root)
    assert str(path) in str(error.value)


def test_decathlon_image_needs_four_channels(tmp_path):
    root = write_case(tmp_path / "msd", layout="decathlon")
    image = root / "imagesTr" / "Case_001.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((12, 10, 8, 3), np.int16), BRATS_LPS), image)
    with pytest.raises(CaseError, match="4-D with 4 channels"):
        load_case(image)


def test_duplicate_modality_files_are_refused(tmp_path):
    root = write_case(tmp_path / "case")
    write_case(root, ext=".nii", modalities=("t1",), seg=False)
    with pytest.raises(CaseError, match="2 files for t1"):
        find_case(root)


def test_folder_problems_are_named(tmp_path):
    write_case(tmp_path / "two", case_id="A")
    write_case(tmp_path / "two", case_id="B")
    with pytest.raises(CaseError, match="holds 2 cases"):
        find_case(tmp_path / "two")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaseError, match="no BraTS modality files"):
        find_case(tmp_path / "empty")
    with pytest.raises(CaseError, match="no such file"):
        find_case(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CaseError, match="not a NIfTI file"):
        find_case(tmp_path / "notes.txt")
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2)), np.eye(4)), tmp_path / "brain.nii.gz")
    with pytest.raises(CaseError, match="does not follow a BraTS layout"):
        find_case(tmp_path / "brain.nii.gz")
    with pytest.raises(CaseError, match="no BraTS case found"):
        find_cases(tmp_path / "empty")


def test_saving_never_overwrites_inputs_and_leaves_no_partial_files(tmp_path):
    root = write_case(tmp_path / "case")
    case = load_case(root)
    t1 = next(root.glob("*_t1.nii.gz"))
    before = t1.read_bytes()
    with pytest.raises(CaseError, match="refusing to overwrite an input scan"):
        save_volume(case.seg, case.geometry, t1, protect=case.files.inputs)
    assert t1.read_bytes() == before

    with pytest.raises(CaseError, match="does not match the scan"):
        save_volume(case.seg[:-1], case.geometry, root / "mask.nii.gz")
    with pytest.raises(CaseError, match=r"must end in \.nii"):
        save_volume(case.seg, case.geometry, root / "mask.png")
    with pytest.raises(CaseError, match="output folder does not exist"):
        save_volume(case.seg, case.geometry, tmp_path / "nowhere" / "mask.nii.gz")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(CaseError):
        save_volume(case.seg, case.geometry, blocker / "mask.nii.gz")

    first = save_volume(case.seg, case.geometry, root / "mask.nii.gz")
    assert first.stat().st_mode & 0o044 == 0o044, "saved masks must be readable by others"
    second = save_volume(np.zeros_like(case.seg), case.geometry, first)
    assert not np.asarray(nib.load(second).dataobj).any()
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []


def test_unwritable_folder_is_reported(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root can write into read-only folders")
    root = write_case(tmp_path / "case")
    case = load_case(root)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(CaseError, match="cannot write"):
        save_volume(case.seg, case.geometry, locked / "mask.nii.gz")


def test_no_warning_for_a_clean_case(tmp_path):
    root = write_case(tmp_path / "case")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_case(root)
