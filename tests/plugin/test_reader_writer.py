"""The napari face of the I/O: sample menu, reader and writer, through a real viewer."""

import shutil

import nibabel as nib
import numpy as np
import pytest

from equicam.core.brats import CaseError, load_case
from equicam.plugin.reader import get_reader
from equicam.plugin.sample_data import SAMPLE_CASE

MODALITY_LAYERS = ["T1", "T1ce", "T2", "FLAIR"]


@pytest.fixture
def case_copy(tmp_path):
    """A writable copy of the sample case."""
    return shutil.copytree(SAMPLE_CASE, tmp_path / SAMPLE_CASE.name)


def _check_case_layers(viewer, case):
    names = [layer.name for layer in viewer.layers]
    assert names == [*MODALITY_LAYERS, "ground truth"]
    for layer in viewer.layers:
        assert layer.data.shape == case.geometry.display_shape
        np.testing.assert_allclose(layer.scale, case.spacing)
    for name, modality in zip(MODALITY_LAYERS, ("t1", "t1ce", "t2", "flair"), strict=True):
        layer = viewer.layers[name]
        np.testing.assert_array_equal(layer.data, case.images[modality])
        low, high = layer.contrast_limits
        brain = case.images[modality][case.images[modality] != 0]
        assert brain.min() <= low < high <= brain.max()
    assert viewer.layers["ground truth"].__class__.__name__ == "Labels"
    np.testing.assert_array_equal(viewer.layers["ground truth"].data, case.seg)


def test_sample_menu_opens_the_case(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-equicam", "brats_sample")
    _check_case_layers(viewer, load_case(SAMPLE_CASE))


@pytest.mark.parametrize("which", ["folder", "t2", "seg"])
def test_reader_opens_the_whole_case_from_folder_or_any_file(make_napari_viewer, case_copy, which):
    path = case_copy if which == "folder" else next(case_copy.glob(f"*_{which}.nii.gz"))
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-equicam")
    _check_case_layers(viewer, load_case(case_copy))


def test_reader_declines_other_files_and_says_why_it_cannot_open_a_nifti(tmp_path):
    cam = tmp_path / "cam-flair.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 0.25, np.float32), np.eye(4)), cam)
    (tmp_path / "notes.txt").write_text("not an image")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "empty_folder")) is None
    with pytest.raises(CaseError, match="cam-flair.nii.gz: not a mask"):
        get_reader(str(cam))(str(cam))
    missing = str(tmp_path / "missing_t1.nii.gz")
    with pytest.raises(CaseError, match="missing_t1.nii.gz: no such file"):
        get_reader(missing)(missing)


def test_reader_reports_a_corrupt_scan_by_name(make_napari_viewer, case_copy):
    flair = next(case_copy.glob("*_flair.nii.gz"))
    flair.write_bytes(flair.read_bytes()[:200])
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match="flair.nii.gz") as error:
        viewer.open(str(case_copy), plugin="napari-equicam")
    assert "truncated or corrupt" in str(error.value) + str(error.value.__cause__)
    assert len(viewer.layers) == 0


def test_painted_mask_saves_in_the_scan_geometry(make_napari_viewer, case_copy):
    viewer = make_napari_viewer()
    viewer.open(str(case_copy), plugin="napari-equicam")
    labels = viewer.layers["ground truth"]
    z = labels.data.shape[0] // 2
    labels.selected_label = 2
    labels.paint((z, 10, 10), 2)
    assert labels.data[z, 10, 10] == 2

    out = case_copy / "corrected_mask.nii.gz"
    labels.save(str(out), plugin="napari-equicam")

    saved = nib.load(out)
    scan = nib.load(next(case_copy.glob("*_flair.nii.gz")))
    np.testing.assert_array_equal(saved.affine, scan.affine)
    assert nib.aff2axcodes(saved.affine) == nib.aff2axcodes(scan.affine)
    assert saved.shape == scan.shape
    assert saved.get_data_dtype() == np.uint8
    reloaded = load_case(case_copy).geometry.to_display(np.asarray(saved.dataobj))
    np.testing.assert_array_equal(reloaded, labels.data)
    assert [p.name for p in case_copy.iterdir() if p.name.startswith(".")] == []


def test_writer_never_overwrites_an_input_scan(make_napari_viewer, case_copy):
    viewer = make_napari_viewer()
    viewer.open(str(case_copy), plugin="napari-equicam")
    t1 = next(case_copy.glob("*_t1.nii.gz"))
    before = t1.read_bytes()
    with pytest.raises(OSError, match="refusing to write"):
        viewer.layers["ground truth"].save(str(t1), plugin="napari-equicam")
    assert t1.read_bytes() == before


def test_writer_refuses_a_layer_without_scan_geometry(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((4, 5, 6), np.uint8), name="free mask")
    with pytest.raises(OSError, match="no scan geometry"):
        layer.save(str(tmp_path / "free.nii.gz"), plugin="napari-equicam")
    assert not (tmp_path / "free.nii.gz").exists()


def test_writer_errors_reach_the_user_as_os_errors(tmp_path):
    """napari hides ValueErrors of writers ("not my format"): ours must be OSErrors."""
    from equicam.plugin.writer import write_mask

    with pytest.raises(OSError, match="no scan geometry") as error:
        write_mask(str(tmp_path / "x.nii.gz"), np.zeros((2, 2, 2)), {"metadata": {}})
    assert isinstance(error.value.__cause__, CaseError)
