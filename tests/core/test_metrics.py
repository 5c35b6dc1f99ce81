"""Dice and ASSD against known answers and against medpy's independent implementation."""

import numpy as np
import pytest
from medpy.metric import binary

from equicam.core.fusion import FUSIONS
from equicam.core.metrics import assd, dice


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


def test_fusions_keep_shape_and_range():
    rng = np.random.default_rng(0)
    maps = [rng.random((3, 4, 5)).astype(np.float32) for _ in range(4)]
    for name, fuse in FUSIONS.items():
        fused = fuse(maps)
        assert fused.shape == (3, 4, 5) and fused.dtype == np.float32, name
        assert np.all(fused >= 0) and np.all(fused <= 1)
    assert np.allclose(FUSIONS["max"](maps), np.max(maps, axis=0))
    assert np.allclose(FUSIONS["mean"]([maps[0]]), maps[0])
