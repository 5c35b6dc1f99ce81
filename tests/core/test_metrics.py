"""Dice, ASSD and HD95 against known answers and against medpy's independent implementation."""

import numpy as np
import pytest
from medpy.metric import binary

from equicam.core.fusion import FUSIONS
from equicam.core.metrics import SurfaceReference, assd, dice, hd95


def _cube(shape, start, size):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def test_known_answers():
    a = _cube((20, 20, 20), (5, 5, 5), 4)
    b = _cube((20, 20, 20), (5, 5, 7), 4)  # shifted by 2 voxels along x
    assert dice(a, a) == 1.0 and assd(a, a, (1, 1, 1)) == 0.0
    assert dice(a, b) == pytest.approx(2 * 32 / 128)
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert assd(np.zeros_like(a), np.zeros_like(a), (1, 1, 1)) == 0.0
    assert dice(a, np.zeros_like(a)) == 0.0
    worst = assd(a, np.zeros_like(a), (1.0, 2.0, 3.0))
    assert worst == pytest.approx(np.linalg.norm([20, 40, 60]))
    # A shift of 2 voxels at 3 mm along x moves the surfaces by at most 6 mm.
    assert 0 < assd(a, b, (1.0, 1.0, 3.0)) <= 6.0
    assert hd95(a, a, (1, 1, 1)) == 0.0 and hd95(a, b, (1.0, 1.0, 3.0)) == pytest.approx(6.0)
    assert hd95(a, np.zeros_like(a), (1.0, 2.0, 3.0)) == pytest.approx(worst)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_exact_distances_of_shifted_points_and_slabs(k):
    spacing = (2.0, 0.5, 1.5)
    one, other = np.zeros((12, 12, 12), bool), np.zeros((12, 12, 12), bool)
    one[4, 5, 2], other[4, 5, 2 + k] = True, True
    assert assd(one, other, spacing) == pytest.approx(1.5 * k)
    # Two slabs 2 voxels thick, shifted by k along z: faces move by k * dz.
    slab, shifted = np.zeros((16, 6, 6), bool), np.zeros((16, 6, 6), bool)
    slab[2:4], shifted[2 + k : 4 + k] = True, True
    # Every voxel of a 2-thick slab that fills the (Y, X) plane is surface (the array edge
    # counts as outside): half of them are k planes from the other slab, half k - 1.
    assert assd(slab, shifted, spacing) == pytest.approx(2.0 * (k - 0.5))
    assert assd(slab, shifted, spacing) == pytest.approx(
        binary.assd(slab, shifted, voxelspacing=spacing)
    )
    assert hd95(slab, shifted, spacing) == pytest.approx(
        binary.hd95(slab, shifted, voxelspacing=spacing)
    )


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_medpy_on_random_blobs_and_anisotropic_spacing(seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((24, 28, 20)), 2.5)
    pred, truth = field > 0.05, ndimage.shift(field, (1, -2, 1), order=1) > 0.02
    spacing = (2.0, 0.8, 1.3)
    assert dice(pred, truth) == pytest.approx(binary.dc(pred, truth), abs=1e-12)
    assert assd(pred, truth, spacing) == pytest.approx(
        binary.assd(pred, truth, voxelspacing=spacing), rel=1e-6
    )
    assert hd95(pred, truth, spacing) == pytest.approx(
        binary.hd95(pred, truth, voxelspacing=spacing), rel=1e-9
    )


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_medpy_on_structured_masks_touching_the_border(seed):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:20, :30, :26]
    centre = rng.uniform((0, 5, 5), (20, 25, 21))
    radii = rng.uniform(3, 9, size=3)
    ellipsoid = ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
    ellipsoid = ellipsoid + ((x - centre[2]) / radii[2]) ** 2 <= 1
    box = np.zeros_like(ellipsoid)
    box[0 : rng.integers(3, 12), 8:20, rng.integers(0, 10) : 26] = True
    spacing = tuple(rng.uniform(0.5, 3.0, size=3))
    assert dice(ellipsoid, box) == pytest.approx(binary.dc(ellipsoid, box), abs=1e-12)
    assert assd(ellipsoid, box, spacing) == pytest.approx(
        binary.assd(ellipsoid, box, voxelspacing=spacing), rel=1e-9
    )
    assert hd95(ellipsoid, box, spacing) == pytest.approx(
        binary.hd95(ellipsoid, box, voxelspacing=spacing), rel=1e-9
    )


def test_hd95_is_the_pooled_percentile_not_the_larger_directed_one():
    # A 1-voxel truth inside a long bar: from the bar's far end the truth is far away, from
    # the truth the bar is near. Pooled, the far distances of one side are diluted.
    truth, bar = np.zeros((3, 3, 40), bool), np.zeros((3, 3, 40), bool)
    truth[1, 1, 0] = True
    bar[1, 1, 0:30] = True
    expected = np.percentile(np.concatenate([np.arange(30.0), [0.0]]), 95)
    assert hd95(bar, truth, (1, 1, 1)) == pytest.approx(expected)
    assert hd95(bar, truth, (1, 1, 1)) == pytest.approx(binary.hd95(bar, truth))
    assert hd95(bar, truth, (1, 1, 1)) < np.percentile(np.arange(30.0), 95)


def test_one_reference_scores_many_predictions_as_fresh_calls_do():
    rng = np.random.default_rng(5)
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.standard_normal((20, 24, 22)), 2.0)
    truth = field > 0.1
    reference = SurfaceReference(truth, (1.5, 1.0, 0.9))
    for level in (-0.1, 0.0, 0.05, 0.2, 10.0):
        pred = field > level
        scores = reference.scores(pred)
        assert scores == {
            "assd": assd(pred, truth, (1.5, 1.0, 0.9)),
            "hd95": hd95(pred, truth, (1.5, 1.0, 0.9)),
        }
    empty = SurfaceReference(np.zeros_like(truth), (1, 1, 1))
    assert empty.scores(np.zeros_like(truth)) == {"assd": 0.0, "hd95": 0.0}
    assert empty.scores(truth)["hd95"] == pytest.approx(np.linalg.norm(truth.shape))


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        assd(np.ones((2, 3, 4)), np.ones((2, 3, 5)), (1, 1, 1))
    with pytest.raises(ValueError, match="do not match"):
        assd(np.ones((2, 3, 4)), np.ones((2, 3, 4)), (1, 1))


def test_fusions_keep_shape_and_range():
    rng = np.random.default_rng(0)
    maps = [rng.random((3, 4, 5)).astype(np.float32) for _ in range(4)]
    for name, fuse in FUSIONS.items():
        fused = fuse(maps)
        assert fused.shape == (3, 4, 5) and fused.dtype == np.float32, name
        assert np.all(fused >= 0) and np.all(fused <= 1)
    assert np.allclose(FUSIONS["max"](maps), np.max(maps, axis=0))
    assert np.allclose(FUSIONS["mean"]([maps[0]]), maps[0])


def test_geometric_fusion_is_a_soft_and():
    a = np.array([[[0.25, 0.5, 0.0]]], np.float32)
    b = np.array([[[1.0, 0.5, 0.9]]], np.float32)
    np.testing.assert_allclose(FUSIONS["geometric"]([a, b]), [[[0.5, 0.5, 0.0]]], rtol=1e-6)
    np.testing.assert_allclose(FUSIONS["mean"]([a, b]), [[[0.625, 0.5, 0.45]]], rtol=1e-6)


def test_weighted_fusion_renormalises_over_the_sequences_present():
    from equicam.core.fusion import FUSION_NAMES, fuse

    a = np.array([[[0.2, 1.0]]], np.float32)
    b = np.array([[[0.6, 0.0]]], np.float32)
    c = np.array([[[1.0, 1.0]]], np.float32)
    weights = {"t1": 0.0, "t2": 0.25, "flair": 0.75}
    np.testing.assert_allclose(fuse("weighted", {"t2": a, "flair": b}, weights), [[[0.5, 0.25]]])
    # FLAIR missing: T2 carries all the weight that is left.
    np.testing.assert_allclose(fuse("weighted", {"t2": a, "t1": c}, weights), a)
    # No weights, or only zero weights among those present: the plain mean.
    np.testing.assert_allclose(
        fuse("weighted", {"t2": a, "flair": b}), fuse("mean", {"x": a, "y": b})
    )
    np.testing.assert_allclose(fuse("weighted", {"t1": c, "t2": a}, {"flair": 1.0}), (a + c) / 2)
    assert FUSION_NAMES[-1] == "weighted" and set(FUSIONS) < set(FUSION_NAMES)


@pytest.mark.parametrize("far", [False, True])
def test_distances_stay_exact_when_the_prediction_lies_far_from_the_truth(far):
    # Surfaces apart by more than the boxes the erosions run on.
    truth, pred = np.zeros((30, 40, 50), bool), np.zeros((30, 40, 50), bool)
    truth[2:5, 3:7, 2:6] = True
    pred[24:29, 30:38, 40:49] = True
    if not far:
        pred[3:6, 5:9, 4:7] = True
    spacing = (2.5, 0.9, 1.1)
    scores = SurfaceReference(truth, spacing).scores(pred)
    assert scores["assd"] == pytest.approx(binary.assd(pred, truth, voxelspacing=spacing))
    assert scores["hd95"] == pytest.approx(binary.hd95(pred, truth, voxelspacing=spacing))
