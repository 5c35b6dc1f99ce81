"""BraTS I/O on files really written with nibabel: every layout, the display geometry and its
exact round trip, every bad input, atomic saving."""

import gzip
import os
import re
import resource
import warnings

import nibabel as nib
import numpy as np
import pytest

from equicam.core.brats import (
    CaseWarning,
    find_case,
    find_cases,
    load_case,
    save_volume,
)
from equicam.core.errors import EquicamError
from tests.conftest import BRATS_LPS, SUFFIXES, modality_volume, raw_labels, write_case

LAYOUTS = ["brats2021", "brats2023", "decathlon"]
SHAPE = (12, 10, 8)  # write_case's default file shape


def _normalised(shape=SHAPE):
    """write_case's segmentation, normalised (1 core, 2 oedema, 3 enhancing), in file order."""
    seg = np.zeros(shape, np.uint8)
    seg[2:4, 2:4, 2:4], seg[4:6, 2:4, 2:4], seg[6:8, 2:4, 2:4] = 1, 2, 3
    return seg


def _lps_to_display(array):
    """BRATS_LPS file axes (L, P, S) -> display axes (S, P, L): a plain axis reversal."""
    return array.transpose(2, 1, 0)


def _case_file(root, key, ext=".nii.gz", layout="brats2021"):
    return root / f"Case_001{SUFFIXES[layout][key]}{ext}"


def _rewrite(root, key, array, affine=BRATS_LPS):
    path = _case_file(root, key)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def _error(call, *args):
    with pytest.raises(EquicamError) as error:
        call(*args)
    return str(error.value)


# --- 1. Every layout ---------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_from_the_folder_and_from_each_file(tmp_path, layout, ext):
    root = write_case(tmp_path / "case", layout=layout, ext=ext)
    if layout == "decathlon":
        starts = [root / "imagesTr" / f"Case_001{ext}", root / "labelsTr" / f"Case_001{ext}"]
        raw = np.asarray(nib.load(starts[1]).dataobj)
        assert sorted(np.unique(raw)) == [0, 1, 2, 3]
    else:
        starts = [root, *(_case_file(root, k, ext, layout) for k in SUFFIXES[layout])]
        raw = np.asarray(nib.load(_case_file(root, "seg", ext, layout)).dataobj)
        assert sorted(np.unique(raw)) == ([0, 1, 2, 4] if layout == "brats2021" else [0, 1, 2, 3])
    assert all(p.exists() for p in starts)

    for start in starts:
        case = load_case(start)
        assert (case.case_id, case.files.layout) == ("Case_001", layout)
        assert sorted(case.images) == ["flair", "t1", "t1ce", "t2"]
        for m, volume in case.images.items():
            assert volume.dtype == np.float32
            np.testing.assert_array_equal(volume, _lps_to_display(modality_volume(m, SHAPE)))
        assert case.seg.dtype == np.uint8
        np.testing.assert_array_equal(case.seg, _lps_to_display(_normalised()))
        np.testing.assert_array_equal(case.whole_tumour, case.seg > 0)
        assert case.spacing == (1.0, 1.0, 1.0)


def test_decathlon_test_images_load_without_labels(tmp_path):
    root = write_case(tmp_path / "msd", layout="decathlon", seg=False)
    (root / "imagesTr").rename(root / "imagesTs")
    case = load_case(root / "imagesTs" / "Case_001.nii.gz")
    assert case.seg is None and case.whole_tumour is None
    np.testing.assert_array_equal(
        case.images["t1ce"], _lps_to_display(modality_volume("t1ce", SHAPE))
    )


def test_find_cases_walks_nested_folders_of_mixed_layouts(tmp_path):
    write_case(tmp_path / "2021" / "A", case_id="BraTS2021_00002", ext=".nii")
    write_case(tmp_path / "2023" / "deep" / "B", layout="brats2023", case_id="BraTS-GLI-00001-000")
    write_case(tmp_path / "msd", layout="decathlon", case_id="BRATS_003")
    write_case(tmp_path / "msd", layout="decathlon", case_id="BRATS_004", seg=False)
    write_case(tmp_path / "2021" / "C", case_id="BraTS2021_00001", seg=False)
    # Things that are not cases: notes, a template, macOS "._" copies.
    (tmp_path / "dataset.json").write_text("{}")
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2)), np.eye(4)), tmp_path / "template.nii.gz")
    (tmp_path / "2021" / "C" / "._BraTS2021_00001_t1.nii.gz").write_bytes(b"\0\5\26\7" * 64)
    (tmp_path / "msd" / "imagesTr" / "._BRATS_003.nii.gz").write_bytes(b"\0\5\26\7" * 64)

    cases = find_cases(tmp_path)
    assert [c.case_id for c in cases] == [
        "BRATS_003",
        "BRATS_004",
        "BraTS-GLI-00001-000",
        "BraTS2021_00001",
        "BraTS2021_00002",
    ]
    assert [c.layout for c in cases] == ["decathlon"] * 2 + ["brats2023"] + ["brats2021"] * 2
    assert [c.seg is not None for c in cases] == [True, False, True, False, True]
    assert cases[2].images["flair"].name == "BraTS-GLI-00001-000-t2f.nii.gz"
    for files in cases:
        assert sorted(load_case(files).images) == ["flair", "t1", "t1ce", "t2"]


def test_hidden_copies_next_to_a_case_are_not_scans(tmp_path):
    root = write_case(tmp_path / "case")
    apple = root / "._Case_001_t1.nii.gz"
    apple.write_bytes(b"\0\5\26\7" * 64)
    assert find_case(root).images["t1"] == _case_file(root, "t1")
    assert "hidden file" in _error(find_case, apple)


# --- 2. Geometry -------------------------------------------------------------------------------

# affine, display index of the file voxel (1, 2, 3), display shape, display spacing.
# Display order is (S, P, L): axis 0 inferior->superior, 1 anterior->posterior, 2 right->left.
ORIENTATIONS = {
    # x = -i, y = 239 - j, z = k  ->  (k, j, i)
    "brats_lps": (BRATS_LPS, (3, 2, 1), (8, 10, 12), (1.0, 1.0, 1.0)),
    # x = i, y = j, z = k  ->  (k, 9 - j, 11 - i)
    "ras": (np.eye(4), (3, 7, 10), (8, 10, 12), (1.0, 1.0, 1.0)),
    # sagittal, axis codes 'PSR': x = 1.1 k - 5, y = -0.8 i + 10, z = 2.5 j - 3  ->  (j, i, 7 - k)
    "sagittal_psr": (
        np.array([[0, 0, 1.1, -5], [-0.8, 0, 0, 10], [0, 2.5, 0, -3], [0, 0, 0, 1]]),
        (2, 1, 4),
        (10, 12, 8),
        (2.5, 0.8, 1.1),
    ),
    # 0.9 x 0.9 x 3 mm, 'RPS': x = 0.9 i, y = -0.9 j, z = 3 k  ->  (k, j, 11 - i)
    "anisotropic": (np.diag([0.9, -0.9, 3.0, 1.0]), (3, 2, 10), (8, 10, 12), (3.0, 0.9, 0.9)),
}


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_display_orientation_follows_the_patient(tmp_path, name):
    affine, marker, display_shape, spacing = ORIENTATIONS[name]
    root = write_case(tmp_path / "case", affine=affine)
    # t1, t1ce, t2 hold each voxel's world S, P and L coordinate (mm); flair holds a marker.
    ijk = np.stack(np.meshgrid(*map(np.arange, SHAPE), indexing="ij"), axis=-1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    for key, coordinate in {
        "t1": world[..., 2],
        "t1ce": -world[..., 1],
        "t2": -world[..., 0],
    }.items():
        _rewrite(root, key, coordinate.astype(np.float32), affine)
    flair = modality_volume("flair", SHAPE)
    flair[1, 2, 3] = 999
    _rewrite(root, "flair", flair, affine)

    case = load_case(root)
    assert case.spacing == pytest.approx(spacing)
    assert np.argwhere(case.images["flair"] == 999).tolist() == [list(marker)]
    for axis, key in enumerate(["t1", "t1ce", "t2"]):
        volume = case.images[key]
        assert volume.shape == display_shape
        step = np.diff(volume, axis=axis)
        np.testing.assert_allclose(step, spacing[axis], rtol=1e-5)  # grows along its own axis
        for other in {0, 1, 2} - {axis}:
            np.testing.assert_allclose(np.diff(volume, axis=other), 0, atol=1e-4)
    for array in [*case.images.values(), case.seg]:
        assert array.flags.c_contiguous and array.shape == display_shape


def _set_forms(root, sform_code, qform_code):
    """Rewrite every file of a case with the given sform/qform codes (same affine)."""
    for path in root.iterdir():
        image = nib.load(path)
        header = image.header.copy()
        header.set_sform(image.affine, code=sform_code)
        header.set_qform(image.affine, code=qform_code)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), None, header), path)


ROUND_TRIPS = {name: (value[0], None) for name, value in ORIENTATIONS.items()}
ROUND_TRIPS["lps_scanner_sform_and_qform"] = (BRATS_LPS, (1, 1))
ROUND_TRIPS["lps_qform_only"] = (BRATS_LPS, (0, 1))
ROUND_TRIPS["ras_qform_only"] = (np.eye(4), (0, 1))


@pytest.mark.parametrize("name", ROUND_TRIPS)
@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_saved_volumes_have_exactly_the_source_geometry(tmp_path, name, ext):
    affine, forms = ROUND_TRIPS[name]
    root = write_case(tmp_path / "case", affine=affine)
    if forms:
        _set_forms(root, *forms)
    source = nib.load(_case_file(root, "seg"))
    case = load_case(root)

    saved = nib.load(save_volume(case.seg, case.geometry, tmp_path / f"mask{ext}"))
    np.testing.assert_array_equal(saved.affine, source.affine)  # bit-exact
    assert nib.aff2axcodes(saved.affine) == nib.aff2axcodes(source.affine)
    assert saved.shape == SHAPE and saved.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(saved.dataobj), _normalised())
    assert [int(saved.header[k]) for k in ("sform_code", "qform_code")] == [
        int(source.header[k]) for k in ("sform_code", "qform_code")
    ]
    assert saved.header.get_zooms() == source.header.get_zooms()

    cam = save_volume(case.images["t1"], case.geometry, tmp_path / f"cam{ext}", dtype="float32")
    cam = nib.load(cam)
    assert cam.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asarray(cam.dataobj), modality_volume("t1", SHAPE))


def test_oblique_scan_loads_with_a_warning_naming_it_and_round_trips_exactly(tmp_path):
    c, s = np.cos(0.2), np.sin(0.2)
    affine = np.array([[c, -s, 0, 3], [s, c, 0, -7], [0, 0, 2.0, 1], [0, 0, 0, 1]])
    root = write_case(tmp_path / "case", affine=affine)
    t1 = _case_file(root, "t1")
    with pytest.warns(CaseWarning, match="oblique") as caught:
        case = load_case(root)
    assert any(str(t1) in str(w.message) for w in caught)
    assert case.images["t1"].shape == (8, 10, 12)  # nearest axis-aligned: (S, P, L) = (k, j, i)

    saved = nib.load(save_volume(case.seg, case.geometry, tmp_path / "mask.nii.gz"))
    np.testing.assert_array_equal(saved.affine, nib.load(t1).affine)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), _normalised())


def test_nifti2_scans_are_saved_as_nifti2_with_their_affine(tmp_path):
    root = write_case(tmp_path / "case", affine=np.eye(4))
    for path in root.iterdir():
        image = nib.load(path)
        nib.save(nib.Nifti2Image(np.asarray(image.dataobj), image.affine), path)
    case = load_case(root)
    saved = nib.load(save_volume(case.seg, case.geometry, tmp_path / "mask.nii.gz"))
    assert isinstance(saved, nib.Nifti2Image)
    np.testing.assert_array_equal(saved.affine, np.eye(4))
    np.testing.assert_array_equal(np.asarray(saved.dataobj), _normalised())


def test_a_scaled_source_does_not_scale_the_saved_mask(tmp_path):
    root = write_case(tmp_path / "case")
    values = modality_volume("t1", SHAPE) * 2.5 + 1000.25
    image = nib.Nifti1Image(values, BRATS_LPS)
    image.set_data_dtype(np.int16)  # stored as int16 with a scale slope and intercept
    nib.save(image, _case_file(root, "t1"))
    assert nib.load(_case_file(root, "t1")).dataobj.slope != 1
    case = load_case(root)
    np.testing.assert_allclose(case.images["t1"], _lps_to_display(values), atol=1e-3)
    saved = nib.load(save_volume(case.seg, case.geometry, tmp_path / "mask.nii.gz"))
    assert saved.dataobj.slope == 1 and saved.dataobj.inter == 0
    np.testing.assert_array_equal(np.asarray(saved.dataobj), _normalised())


# --- 3. Bad input ------------------------------------------------------------------------------


def test_a_missing_modality_loads_the_rest_with_a_warning_naming_the_folder(tmp_path):
    root = write_case(tmp_path / "case", modalities=("t1", "t2", "flair"))
    with pytest.warns(CaseWarning, match="no t1ce file") as caught:
        case = load_case(root)
    assert str(root) in str(caught[0].message)
    assert sorted(case.images) == ["flair", "t1", "t2"]


def test_a_case_without_any_usable_modality_is_an_error(tmp_path):
    root = write_case(tmp_path / "case", modalities=("t1",))
    message = _error(load_case, root, ("flair", "t2"))
    assert str(root) in message and "has none of" in message
    with pytest.raises(ValueError, match="unknown modalities"):
        load_case(root, ("t5",))

    only_seg = write_case(tmp_path / "seg_only", modalities=())
    message = _error(load_case, only_seg)
    assert str(only_seg) in message and "no image modality" in message


@pytest.mark.parametrize("second", ["Case_001_t1.nii", "Case_001_T1.nii.gz"])
def test_two_files_for_one_modality_are_refused(tmp_path, second):
    root = write_case(tmp_path / "case")
    nib.save(nib.Nifti1Image(modality_volume("t1", SHAPE), BRATS_LPS), root / second)
    for start in (root, root / second, _case_file(root, "flair")):
        message = _error(load_case, start)
        assert str(root) in message and "2 files for t1" in message
        assert "Case_001_t1.nii.gz" in message and second in message


def _nan_volume():
    volume = modality_volume("t2", SHAPE).astype(np.float32)
    volume[3, 4, 5] = np.nan
    return volume


def _inf_volume():
    volume = modality_volume("t2", SHAPE).astype(np.float64)
    volume[0, 0, 0] = -np.inf
    return volume


def _cut(root):
    path = _case_file(root, "flair")
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return path


def _bytes(content):
    def write(root):
        path = _case_file(root, "t1")
        path.write_bytes(content)
        return path

    return write


def _as_nii(damage):
    """Replace Case_001_t2.nii.gz by a real Case_001_t2.nii, then damage its bytes."""

    def write(root):
        _case_file(root, "t2").unlink()
        path = _case_file(root, "t2", ".nii")
        nib.save(nib.Nifti1Image(modality_volume("t2", SHAPE), BRATS_LPS), path)
        path.write_bytes(damage(path.read_bytes()))
        return path

    return write


def _shifted(root):
    affine = BRATS_LPS.copy()
    affine[0, 3] += 2.0  # 2 mm off: not co-registered
    return _rewrite(root, "t1ce", modality_volume("t1ce", SHAPE), affine)


def _singular(root):
    path = _case_file(root, "t2")
    header = nib.load(path).header.copy()
    header["srow_z"] = 0  # the sform (used, code 2) maps every voxel to z = 0
    nib.save(nib.Nifti1Image(modality_volume("t2", SHAPE), None, header), path)
    return path


BAD_FILES = {
    "2-D": (lambda r: _rewrite(r, "t2", np.ones((12, 10), np.int16)), "3-D volume, found 2-D"),
    "4-D": (lambda r: _rewrite(r, "t2", np.ones((*SHAPE, 2), np.int16)), "3-D volume, found 4-D"),
    "5-D": (
        lambda r: _rewrite(r, "t2", np.ones((*SHAPE, 1, 2), np.int16)),
        "3-D volume, found 5-D",
    ),
    "NaN": (lambda r: _rewrite(r, "t2", _nan_volume()), "1 NaN or infinite voxels"),
    "Inf": (lambda r: _rewrite(r, "t2", _inf_volume()), "1 NaN or infinite voxels"),
    "empty": (lambda r: _rewrite(r, "t2", np.zeros(SHAPE, np.int16)), r"empty \(every voxel is 0"),
    "constant": (lambda r: _rewrite(r, "t2", np.full(SHAPE, 5, np.int16)), "constant"),
    "other shape": (
        lambda r: _rewrite(r, "t2", modality_volume("t2", (12, 10, 9))),
        r"shape \(12, 10, 9\) differs from Case_001_t1\.nii\.gz",
    ),
    "other affine": (_shifted, "affine differs from Case_001_t1.nii.gz.*not co-registered"),
    "singular affine": (_singular, "affine is missing or singular"),
    "truncated .nii.gz": (_cut, "truncated or corrupt"),
    "random bytes named .nii.gz": (
        _bytes(b"not a NIfTI file, honestly" * 40),
        "truncated or corrupt",
    ),
    "gzip of garbage": (_bytes(gzip.compress(b"garbage" * 100)), "truncated or corrupt"),
    "garbage header .nii": (_as_nii(lambda b: bytes(range(256)) + bytes(92) + b[348:]), "corrupt"),
    "truncated .nii": (_as_nii(lambda b: b[:-100]), "truncated or corrupt"),
    "seg label 5": (lambda r: _rewrite(r, "seg", np.full(SHAPE, 5, np.uint8)), r"labels \[5\]"),
    "seg label 3 in 2021": (
        lambda r: _rewrite(r, "seg", raw_labels(SHAPE, "brats2023")),
        r"\[3\]",
    ),
    "seg not integer": (
        lambda r: _rewrite(r, "seg", np.full(SHAPE, 0.5, np.float32)),
        "non-integer",
    ),
    "seg NaN": (lambda r: _rewrite(r, "seg", np.full(SHAPE, np.nan, np.float32)), "NaN"),
    "seg other shape": (
        lambda r: _rewrite(r, "seg", np.zeros((12, 10, 7), np.uint8)),
        r"shape \(12, 10, 7\) differs",
    ),
}


@pytest.mark.parametrize("bad", BAD_FILES)
def test_each_bad_file_is_refused_naming_the_file_and_the_problem(tmp_path, bad):
    damage, phrase = BAD_FILES[bad]
    root = write_case(tmp_path / "case")
    path = damage(root)
    message = _error(load_case, root)
    assert message.startswith(str(path)), message
    assert re.search(phrase, message), message


def test_bad_decathlon_files_are_refused_naming_the_file(tmp_path):
    root = write_case(tmp_path / "msd", layout="decathlon")
    image, labels = root / "imagesTr" / "Case_001.nii.gz", root / "labelsTr" / "Case_001.nii.gz"
    nib.save(nib.Nifti1Image(raw_labels(SHAPE, "brats2021"), BRATS_LPS), labels)
    message = _error(load_case, image)
    assert str(labels) in message and r"labels [4]" in message

    for array in (np.ones((*SHAPE, 3), np.int16), modality_volume("t1", SHAPE)):
        nib.save(nib.Nifti1Image(array, BRATS_LPS), image)
        message = _error(load_case, labels)
        assert str(image) in message and "4-D with 4 channels" in message

    image.unlink()
    message = _error(load_case, labels)
    assert str(labels) in message and "no 4-D image file" in message


def _refused(call, argument, named, phrase):
    message = _error(call, argument)
    assert str(named) in message and phrase in message, message


def test_folder_and_path_problems_are_named(tmp_path):
    two = tmp_path / "two"
    write_case(two, case_id="A")
    write_case(two, case_id="B")
    _refused(load_case, two, two, "holds 2 cases (A, B)")

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no scans here")
    _refused(load_case, empty, empty, "no BraTS modality files")
    _refused(find_cases, empty, empty, "no BraTS case found")

    missing = tmp_path / "missing"
    _refused(load_case, missing, missing, "no such file or folder")
    _refused(find_cases, missing, missing, "not a folder")

    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    _refused(load_case, notes, notes, "not a NIfTI file")
    _refused(find_cases, notes, notes, "not a folder")

    brain = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2)), np.eye(4)), brain)
    _refused(load_case, brain, brain, "does not follow a BraTS layout")


def test_find_cases_refuses_one_case_id_in_two_folders(tmp_path):
    write_case(tmp_path / "a", case_id="BraTS2021_00001")
    write_case(tmp_path / "b", case_id="BraTS2021_00001", ext=".nii")
    message = _error(find_cases, tmp_path)
    assert str(tmp_path / "b") in message and f"also exists in {tmp_path / 'a'}" in message


# --- 3b. Bad save targets; 4. atomic save ------------------------------------------------------


def _listing(folder):
    return sorted(p.name for p in folder.rglob("*"))


@pytest.fixture
def loaded(tmp_path):
    return load_case(write_case(tmp_path / "case"))


def test_saving_never_overwrites_an_input(tmp_path, loaded):
    inputs = sorted(loaded.files.inputs)
    assert len(inputs) == 5
    link = tmp_path / "link.nii.gz"
    link.symlink_to(_case_file(loaded.files.folder, "flair"))
    for target in [*inputs, link]:
        before, listing = target.read_bytes(), _listing(tmp_path)
        with pytest.raises(EquicamError, match="refusing to") as error:
            save_volume(loaded.seg, loaded.geometry, target, protect=loaded.files.inputs)
        assert str(target) in str(error.value)
        assert target.read_bytes() == before and _listing(tmp_path) == listing


def test_bad_save_targets_are_refused_and_write_nothing(tmp_path, loaded):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        (loaded.seg[:-1], out / "mask.nii.gz", out / "mask.nii.gz", "does not match the scan"),
        (loaded.seg[None], out / "mask.nii.gz", out / "mask.nii.gz", "does not match the scan"),
        (loaded.seg, out / "mask.png", out / "mask.png", r"must end in \.nii or \.nii\.gz"),
        (loaded.seg, out / "mask.nii.gz.tmp", out / "mask.nii.gz.tmp", r"must end in \.nii"),
        (loaded.seg, tmp_path / "nowhere" / "m.nii.gz", tmp_path / "nowhere", "does not exist"),
        (loaded.seg, blocker / "mask.nii.gz", blocker, "is a file, not a folder"),
        (loaded.seg, out / "sub.nii.gz", out / "sub.nii.gz", "cannot write"),
    ]
    (out / "sub.nii.gz").mkdir()  # the target is a folder: fails at the final rename
    listing = _listing(tmp_path)
    for array, target, named, phrase in cases:
        message = _error(save_volume, array, loaded.geometry, target)
        assert message.startswith(f"{named}: "), message
        assert re.search(phrase, message), message
        assert _listing(tmp_path) == listing, f"{target} left files behind"
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_reported(tmp_path, loaded):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    message = _error(save_volume, loaded.seg, loaded.geometry, locked / "mask.nii.gz")
    assert str(locked) in message and "cannot write" in message
    assert list(locked.iterdir()) == []


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path, loaded):
    out = tmp_path / "out"
    out.mkdir()
    target = save_volume(loaded.seg, loaded.geometry, out / "map.nii", dtype="float32")
    before = target.read_bytes()
    assert len(before) > 2048
    # A real write error from the kernel (EFBIG, as with a full disk): files may not grow past
    # 2 KiB while saving. Python ignores SIGXFSZ, so the write raises OSError.
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, limits[1]))
    try:
        with pytest.raises(EquicamError, match="cannot write") as error:
            save_volume(
                loaded.images["t1"], loaded.geometry, target, dtype="float32", replace=True
            )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    assert str(target) in str(error.value)
    assert _listing(out) == ["map.nii"] and target.read_bytes() == before


def test_saving_is_atomic_and_replaces_an_earlier_result_only_when_asked(tmp_path, loaded):
    out = tmp_path / "out"
    out.mkdir()
    first = save_volume(loaded.seg, loaded.geometry, out / "mask.nii.gz")
    assert first == out / "mask.nii.gz" and _listing(out) == ["mask.nii.gz"]
    assert first.read_bytes()[:2] == b"\x1f\x8b"  # really gzip
    assert first.stat().st_mode & 0o044 == 0o044, "saved masks must be readable by others"

    edited = loaded.seg.copy()
    edited[0, 0, 0] = 2
    with pytest.raises(EquicamError, match="already exists; nothing was replaced"):
        save_volume(edited, loaded.geometry, first)
    second = save_volume(edited, loaded.geometry, first, protect=loaded.files.inputs, replace=True)
    assert second == first and _listing(out) == ["mask.nii.gz"]
    np.testing.assert_array_equal(np.asarray(nib.load(second).dataobj), _lps_to_display(edited))

    plain = save_volume(loaded.seg, loaded.geometry, out / "mask.nii")
    assert plain.read_bytes()[344:348] == b"n+1\0"  # an uncompressed single-file NIfTI
    assert _listing(out) == ["mask.nii", "mask.nii.gz"]


def test_no_warning_for_a_clean_case(tmp_path):
    root = write_case(tmp_path / "case")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_case(root)
