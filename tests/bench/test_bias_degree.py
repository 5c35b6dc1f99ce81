"""bench.bias_degree: without correction its slices are the slice cache's, to the bit."""

import numpy as np

from bench.bias_degree import cache_slices
from equicam.core.brats import load_case
from equicam.core.prepare import prepare
from training.data import SliceCache

MODALITIES = ("t1", "t1ce", "t2", "flair")


def test_degree_zero_gives_the_cache_s_slices_and_a_degree_changes_them(synthetic_cases, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "BraTS2021_00000").symlink_to(synthetic_cases / "BraTS2021_00000")
    prepare(data, tmp_path / "cache", size=96, log=str)
    split = next(
        s
        for s in ("train", "val", "test")
        if "BraTS2021_00000" in SliceCache(tmp_path / "cache", s, MODALITIES).case_ids
    )
    cached, masks = SliceCache(tmp_path / "cache", split, MODALITIES).case_slices(
        "BraTS2021_00000"
    )
    case = load_case(synthetic_cases / "BraTS2021_00000", MODALITIES)
    images, truth, spacing = cache_slices(case, MODALITIES, 0)
    np.testing.assert_array_equal(images, cached)
    np.testing.assert_array_equal(truth, masks > 0)
    assert spacing[1] == spacing[2] > case.spacing[1]
    corrected, _, _ = cache_slices(case, MODALITIES, 2)
    assert np.abs(corrected - images).mean() > 0.01
