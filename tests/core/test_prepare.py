"""`equicam prepare`: the slice cache and the patient splits."""

import json
import warnings

import numpy as np
import pytest

from equicam.core.brats import CaseWarning, find_cases, load_case
from equicam.core.errors import EquicamError
from equicam.core.prepare import SPLITS, case_slices, prepare, split_cases
from equicam.core.preprocess import BIAS_DEGREE


@pytest.fixture(scope="module")
def cache(synthetic_cases, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    meta = prepare(synthetic_cases, out, size=64, seed=3, log=lambda line: None)
    return out, meta


def test_cache_arrays_agree_with_the_cases(cache, synthetic_cases):
    out, meta = cache
    images = np.load(out / "images.npy", mmap_mode="r")
    labels = np.load(out / "labels.npy")
    masks = np.load(out / "masks.npy", mmap_mode="r")
    case_index = np.load(out / "case_index.npy")
    slice_index = np.load(out / "slice_index.npy")
    n = meta["n_slices"]
    assert images.shape == (n, 4, 64, 64) and images.dtype == np.float16
    assert masks.shape == (n, 64, 64) and labels.shape == case_index.shape == (n,)
    assert meta["modalities"] == ["t1", "t1ce", "t2", "flair"]
    assert meta["normalisation"] == "zscore-brain-clip5" and meta["bias_correction"] is False
    assert meta["cases"] == [c.case_id for c in find_cases(synthetic_cases)]

    # Every cached slice holds brain; every slice with brain is cached.
    assert np.all(np.abs(images.astype(np.float32)).reshape(n, -1).max(axis=1) > 0)
    for index, case_id in enumerate(meta["cases"]):
        case = load_case(synthetic_cases / case_id)
        brain_slices = np.flatnonzero(
            np.any([v.any(axis=(1, 2)) for v in case.images.values()], axis=0)
        )
        np.testing.assert_array_equal(slice_index[case_index == index], brain_slices)
        # The slice label is "any tumour voxel" at native resolution.
        expected = case.whole_tumour[brain_slices].any(axis=(1, 2))
        np.testing.assert_array_equal(labels[case_index == index], expected)
    assert meta["n_positive"] == int(labels.sum()) > 0
    assert np.all(np.abs(images.astype(np.float32)) <= 5.0)


def test_a_bias_corrected_cache_holds_the_corrected_slices_and_says_so(
    cache, synthetic_cases, tmp_path
):
    plain_out, plain = cache
    meta = prepare(
        synthetic_cases, tmp_path / "bc", size=64, seed=3, bias_correction=True, log=str
    )
    assert meta["bias_correction"] is True
    assert json.loads((tmp_path / "bc" / "meta.json").read_text())["bias_correction"] is True
    assert meta["n_slices"] == plain["n_slices"] and meta["splits"] == plain["splits"]
    images = np.load(tmp_path / "bc" / "images.npy")
    before = np.load(plain_out / "images.npy")
    assert np.array_equal(images == 0, before == 0)  # the same brain, only its intensities
    assert np.abs(images.astype(np.float32) - before.astype(np.float32)).mean() > 0.01
    first = load_case(synthetic_cases / meta["cases"][0])
    slices = case_slices(first, meta["modalities"], 64, BIAS_DEGREE)
    np.testing.assert_array_equal(images[: slices["z"].size], slices["images"])


def test_splits_are_by_patient_and_reproducible(cache):
    out, meta = cache
    splits = {s: (out / "splits" / f"{s}.txt").read_text().split() for s in SPLITS}
    everyone = [i for s in SPLITS for i in splits[s]]
    assert sorted(everyone) == sorted(meta["cases"])
    assert len(set(everyone)) == len(everyone), "a patient is in two splits"
    assert all(splits[s] for s in SPLITS)
    assert split_cases(meta["cases"], seed=3) == splits
    assert split_cases(meta["cases"], seed=4) != splits or len(meta["cases"]) < 4
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk["splits"] == {s: len(splits[s]) for s in SPLITS}


def test_many_patients_split_70_15_15_without_overlap():
    ids = [f"case{i:03d}" for i in range(100)]
    splits = split_cases(ids, seed=0)
    assert [len(splits[s]) for s in SPLITS] == [70, 15, 15]
    assert set().union(*splits.values()) == set(ids)


def test_an_existing_cache_is_never_overwritten(cache, synthetic_cases):
    out, _ = cache
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(EquicamError, match="already holds files") as error:
        prepare(synthetic_cases, out, size=64, log=lambda line: None)
    assert str(error.value).startswith(str(out))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".equicam-tmp")]


def test_cases_without_segmentation_are_skipped_with_a_warning(synthetic_cases, tmp_path):
    data = tmp_path / "data"
    first, second = find_cases(synthetic_cases)[:2]
    for files in (first, second):
        (data / files.case_id).mkdir(parents=True)
        for path in files.images.values():
            (data / files.case_id / path.name).symlink_to(path)
    (data / second.case_id / second.seg.name).symlink_to(second.seg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta = prepare(data, tmp_path / "cache", size=32, log=lambda line: None)
    assert meta["cases"] == [second.case_id]
    assert any(
        issubclass(w.category, CaseWarning) and first.case_id in str(w.message) for w in caught
    )


def test_prepare_reads_every_brats_layout(tmp_path):
    from tests.conftest import write_case

    write_case(tmp_path / "data" / "a", layout="brats2023", case_id="BraTS-GLI-00001-000")
    write_case(tmp_path / "data" / "b", layout="brats2021", case_id="BraTS2021_00001", ext=".nii")
    write_case(tmp_path / "data" / "msd", layout="decathlon", case_id="BRATS_001")
    meta = prepare(tmp_path / "data", tmp_path / "cache", size=16, log=lambda line: None)
    assert meta["cases"] == ["BRATS_001", "BraTS-GLI-00001-000", "BraTS2021_00001"]
    labels = np.load(tmp_path / "cache" / "labels.npy")
    # write_case's tumour slabs all lie at k = 2, 3 on the superior (third) file axis.
    assert labels.reshape(3, -1).sum(axis=1).tolist() == [2, 2, 2]
    assert np.load(tmp_path / "cache" / "slice_index.npy")[labels == 1].tolist() == [2, 3] * 3


def test_per_slice_zscore_standardises_each_slice_s_brain_and_keeps_background_zero():
    import torch

    from equicam.core.preprocess import zscore_slices

    x = torch.zeros(3, 2, 16, 16)
    x[0, :, 2:10, 3:12] = torch.rand(2, 8, 9) * 4 + 7
    x[1, :, 5:15, 0:6] = -torch.rand(2, 10, 6)
    z = zscore_slices(x)
    for n in (0, 1):
        for c in (0, 1):
            brain = z[n, c][x[n, c] != 0]
            assert abs(float(brain.mean())) < 1e-5
            assert abs(float(brain.std(unbiased=False)) - 1.0) < 1e-4
    assert (z[x == 0] == 0).all()
    assert (z[2] == 0).all()


def test_normalise_images_z_scores_every_sequence_inside_the_shared_brain():
    from equicam.core.preprocess import normalise_images

    rng = np.random.default_rng(0)
    t1 = np.zeros((4, 8, 8), np.float32)
    t1[:, 2:6, 2:6] = rng.uniform(100, 200, (4, 4, 4))
    flair = np.where(t1 > 0, t1 * 3 + 7, 0).astype(np.float32)
    flair[:, 2, 2] = 0  # a voxel dark on FLAIR is still brain: T1 shows it
    out = normalise_images({"t1": t1, "flair": flair})
    brain = t1 != 0
    for volume in out.values():
        assert volume.dtype == np.float32 and not volume[~brain].any()
    assert abs(out["t1"][brain].mean()) < 1e-5 and abs(out["t1"][brain].std() - 1) < 1e-4
    assert (out["flair"][:, 2, 2] < 0).all()  # scored inside the brain, not left at 0
