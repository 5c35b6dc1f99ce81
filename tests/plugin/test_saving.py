"""A radiologist's saved work: reopen a saved mask, save any Labels layer of an open case,
never over a scan (any patient's) nor over an earlier correction; sample-case masks go to
the user's folder."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from equicam.core.brats import CaseError, load_case
from equicam.plugin.cam_layers import default_mask_path, mask_layer_name, run_label
from equicam.plugin.layers import layer_metadata
from equicam.plugin.reader import get_reader
from equicam.plugin.sample_data import SAMPLE_CASE
from equicam.plugin.writer import save_mask_layer


@pytest.fixture
def case_copy(tmp_path):
    return shutil.copytree(SAMPLE_CASE, tmp_path / SAMPLE_CASE.name)


def _bytes(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_saved_mask_reopens_as_labels_in_its_case_geometry(make_napari_viewer, case_copy):
    viewer = make_napari_viewer()
    viewer.open(str(case_copy), plugin="napari-equicam")
    truth = viewer.layers["ground truth"]
    truth.paint((truth.data.shape[0] // 2, 10, 10), 3)
    out = case_copy / "corrected.nii.gz"
    assert truth.save(str(out), plugin="napari-equicam") == [str(out)]

    viewer.layers.clear()
    viewer.open(str(out), plugin="napari-equicam")
    (mask,) = viewer.layers
    assert mask.__class__.__name__ == "Labels" and mask.name == "corrected"
    np.testing.assert_array_equal(mask.data, truth.data)
    info = mask.metadata["equicam"]
    case = load_case(case_copy)
    assert info["case_id"] == case.case_id
    assert info["inputs"] == sorted(str(p) for p in case.files.inputs)
    np.testing.assert_allclose(mask.scale, case.spacing)

    alone = case_copy.parent / "elsewhere" / "corrected.nii.gz"
    alone.parent.mkdir()
    shutil.copy(out, alone)
    ((data, kwargs, kind),) = get_reader(str(alone))(str(alone))
    assert kind == "labels" and kwargs["metadata"]["equicam"]["inputs"] == []
    np.testing.assert_array_equal(data, truth.data)


def test_a_mask_saved_by_equicam_reopens_without_naming_the_plugin(
    make_napari_viewer, case_copy, own_napari_settings
):
    from napari.settings import NapariSettings

    viewer = make_napari_viewer(show=True)
    viewer.open(str(case_copy), plugin="napari-equicam")
    truth = viewer.layers["ground truth"]
    info = truth.metadata["equicam"]
    out = default_mask_path(info, "corrected")
    assert out.name == f"{info['case_id']}_mask_corrected.nii.gz"
    assert truth.save(str(out), plugin="napari-equicam") == [str(out)]
    cli_mask = case_copy / "out" / info["case_id"] / "mask-fused_mean.nii.gz"
    cli_mask.parent.mkdir(parents=True)
    shutil.copy(out, cli_mask)
    (case_copy / "out" / info["case_id"] / "cam.json").write_text(
        json.dumps({"case_folder": str(case_copy)})
    )

    # napari's builtin reader claims *.nii.gz too; the preference equicam added decides, as
    # for File > Open, drag and drop and `napari FILE` (plugin=None: napari's own default for
    # a script, plugin="napari", always means its builtin reader). It is in the settings
    # file, so a new napari session opens masks the same way.
    saved = NapariSettings(config_path=own_napari_settings.config_path).plugins
    assert saved.extension2reader["*_mask*.nii.gz"] == "napari-equicam"
    viewer.layers.clear()
    for path in (out, cli_mask):
        (mask,) = viewer.open(str(path), plugin=None)
        assert mask.__class__.__name__ == "Labels"
        assert mask.metadata["equicam"]["case_id"] == info["case_id"]
        np.testing.assert_array_equal(mask.data, truth.data)
        np.testing.assert_allclose(mask.scale, truth.scale)
        np.testing.assert_allclose(mask.translate, truth.translate)
        viewer.layers.clear()


def test_the_users_own_reader_preference_is_kept(make_napari_viewer, case_copy):
    from napari.settings import get_settings

    viewer = make_napari_viewer()
    get_settings().plugins.extension2reader = {"*_mask*.nii.gz": "napari"}
    viewer.open(str(case_copy), plugin="napari-equicam")
    assert get_settings().plugins.extension2reader["*_mask*.nii.gz"] == "napari"
    assert get_settings().plugins.extension2reader["*/mask-*.nii.gz"] == "napari-equicam"


def test_a_name_that_is_not_nifti_is_refused_with_the_extensions(
    make_napari_viewer, case_copy, tmp_path
):
    viewer = make_napari_viewer()
    viewer.open(str(case_copy), plugin="napari-equicam")
    truth = viewer.layers["ground truth"]
    target = tmp_path / "m.txt"
    # napari offers equicam's writer only .nii.gz and .nii names (its manifest) and says so
    with pytest.warns(UserWarning, match=f"'napari-equicam' is not a valid writer for {target}"):
        assert truth.save(str(target), plugin="napari-equicam") == []
    # File > Save Selected Layers with equicam's filter chosen hands any name to the writer
    # (napari's dialog passes the writer itself), whose error napari shows the user
    from napari.plugins._npe2 import file_extensions_string_for_layers

    _, writers = file_extensions_string_for_layers([truth])
    (ours,) = [w for w in writers if w.plugin_name == "napari-equicam"]
    viewer.layers.selection = {truth}
    with pytest.raises(OSError, match=r"m\.txt: output name must end in \.nii or \.nii\.gz"):
        viewer.layers.save(str(target), selected=True, _writer=ours)
    meta = truth.as_layer_data_tuple()[1]
    with pytest.raises(CaseError, match=r"m\.txt: output name must end in \.nii or \.nii\.gz"):
        save_mask_layer(truth.data, meta["metadata"]["equicam"], target)
    assert not target.exists() and not list(tmp_path.glob(".*"))


def test_a_labels_layer_drawn_with_napari_saves_in_the_open_case_geometry(
    make_napari_viewer, case_copy
):
    viewer = make_napari_viewer()
    viewer.open(str(case_copy), plugin="napari-equicam")
    shape = viewer.layers["FLAIR"].data.shape
    drawn = viewer.add_labels(np.zeros(shape, np.uint8), name="my drawing")
    drawn.paint((shape[0] // 2, 20, 20), 1)
    out = case_copy / "drawing.nii.gz"
    assert drawn.save(str(out), plugin="napari-equicam") == [str(out)]
    scan = nib.load(next(case_copy.glob("*_flair.nii.gz")))
    saved = nib.load(out)
    np.testing.assert_array_equal(saved.affine, scan.affine)
    reloaded = load_case(case_copy).geometry.to_display(np.asarray(saved.dataobj))
    np.testing.assert_array_equal(reloaded, drawn.data)

    odd = viewer.add_labels(np.zeros((3, 4, 5), np.uint8))
    with pytest.raises(OSError, match="no open case has its shape"):
        odd.save(str(case_copy / "odd.nii.gz"), plugin="napari-equicam")
    assert not (case_copy / "odd.nii.gz").exists()


def test_the_plugins_save_never_replaces_an_earlier_correction(case_copy):
    case = load_case(case_copy)
    first = layer_metadata(case)["equicam"]
    path = default_mask_path(first, "mask FLAIR (equivariant)")
    edited = case.seg.copy()
    edited[edited == 1] = 2
    assert save_mask_layer(edited, first, path) == path
    saved = path.read_bytes()
    # a new run's mask gets the same default name: it goes beside, the correction stays
    second = layer_metadata(case)["equicam"]
    assert save_mask_layer(case.seg, second, path) == path.with_name(
        path.name.replace(".nii.gz", "_2.nii.gz")
    )
    assert path.read_bytes() == saved
    # the corrected layer saving again updates its own file
    edited[0, 0, 0] = 3
    assert save_mask_layer(edited, first, default_mask_path(first, "ignored")) == path
    assert path.read_bytes() != saved


def test_default_names_differ_by_method_and_sample_masks_go_to_the_user(monkeypatch, tmp_path):
    monkeypatch.setenv("EQUICAM_MASK_DIR", str(tmp_path / "masks"))
    info = layer_metadata(load_case(SAMPLE_CASE))["equicam"]
    names = {
        default_mask_path(info, mask_layer_name("fused_mean", run_label("baseline", method)))
        for method in ("cam", "gradcam", "gradcampp")
    }
    assert len(names) == 3
    for path in names:
        assert path.parent == tmp_path / "masks" / SAMPLE_CASE.name
    assert default_mask_path(info, "T2").name == f"{SAMPLE_CASE.name}_mask_T2_mask.nii.gz"
    case = load_case(SAMPLE_CASE)
    written = save_mask_layer(case.seg, info, default_mask_path(info, "mask"))
    assert written.parent == tmp_path / "masks" / SAMPLE_CASE.name and written.is_file()
