"""Mask editing on shapes with known answers: spheres, discs, cubes on anisotropic grids."""

import numpy as np
import pytest

from equicam.core.mask_edit import (
    fill_holes,
    grow,
    interpolate_slices,
    keep_component_at,
    largest_component,
    remove_small_components,
    shrink,
    strongest_component,
)


def _ball(shape, spacing, centre_mm, radius_mm):
    grids = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    dist2 = sum((g - c) ** 2 for g, c in zip(grids, centre_mm, strict=True))
    return dist2 <= radius_mm**2


def _radius_along(mask, centre_idx, axis, spacing):
    """Extent of the mask from the centre voxel along one axis, in mm."""
    line = np.moveaxis(mask, axis, 0)[
        (slice(None),) + tuple(c for i, c in enumerate(centre_idx) if i != axis)
    ]
    idx = np.flatnonzero(line)
    return (idx.max() - centre_idx[axis]) * spacing[axis]


@pytest.mark.parametrize("r", [3.0, 7.5])
def test_grow_adds_r_mm_to_a_sphere_on_anisotropic_spacing(r):
    spacing = (1.0, 0.8, 2.5)
    shape = (60, 75, 26)
    centre_idx = (30, 37, 13)
    centre = tuple(c * s for c, s in zip(centre_idx, spacing, strict=True))
    sphere = _ball(shape, spacing, centre, 10.0)
    grown = grow(sphere, spacing, r)
    expected = _ball(shape, spacing, centre, 10.0 + r)
    for axis in range(3):  # within one voxel of the sphere of radius 10 + r on this grid
        got = _radius_along(grown, centre_idx, axis, spacing)
        assert (
            abs(got - _radius_along(expected, centre_idx, axis, spacing)) <= spacing[axis] + 1e-9
        )
        assert abs(got - (10 + r)) <= 2 * spacing[axis]
    # the grown sphere and the sphere of radius 10 + r differ only within a voxel of its surface
    grids = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)))
    disagree = grown ^ expected
    assert np.abs(dist[disagree] - (10 + r)).max() <= np.linalg.norm(spacing)
    assert not (sphere & ~grown).any()


def test_shrink_removes_r_mm_and_inverts_grow_on_a_sphere():
    spacing = (1.0, 0.8, 2.5)
    shape = (60, 75, 26)
    centre_idx = (30, 37, 13)
    centre = tuple(c * s for c, s in zip(centre_idx, spacing, strict=True))
    sphere = _ball(shape, spacing, centre, 15.0)
    shrunk = shrink(sphere, spacing, 5.0)
    expected = _ball(shape, spacing, centre, 10.0)
    for axis in range(3):
        got = _radius_along(shrunk, centre_idx, axis, spacing)
        assert (
            abs(got - _radius_along(expected, centre_idx, axis, spacing)) <= spacing[axis] + 1e-9
        )
    assert not (shrunk & ~sphere).any()
    # shrinking from the array edge: a full block loses its border
    block = np.ones((10, 10, 10), bool)
    inner = shrink(block, (1, 1, 1), 1.0)
    assert inner.sum() == 8**3


def test_grow_and_shrink_reject_bad_input_and_keep_empty_masks_empty():
    empty = np.zeros((5, 5, 5), bool)
    assert not grow(empty, (1, 1, 1), 4).any()
    with pytest.raises(ValueError, match="spacing"):
        grow(empty, (1, 0, 1), 2)
    with pytest.raises(ValueError, match="3-D"):
        shrink(np.zeros((5, 5)), (1, 1, 1), 1)
    with pytest.raises(ValueError, match=">= 0"):
        grow(empty, (1, 1, 1), -1)


def test_components_under_the_minimum_vanish_by_volume_in_mm3():
    spacing = (1.0, 1.0, 3.0)  # a voxel is 3 mm3
    mask = np.zeros((30, 30, 10), dtype=np.uint8)
    mask[2:12, 2:12, 2:6] = 1  # 400 voxels = 1200 mm3
    mask[20:23, 20:23, 2:4] = 2  # 18 voxels = 54 mm3 (labels count as foreground)
    mask[25, 2, 8] = 1  # 1 voxel = 3 mm3
    kept = remove_small_components(mask, spacing, 60.0)
    assert kept.dtype == bool
    assert kept.sum() == 400
    assert remove_small_components(mask, spacing, 50.0).sum() == 418
    # voxels touching only by a corner are one component (26-connectivity)
    diagonal = np.zeros((4, 4, 4), bool)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = True
    assert remove_small_components(diagonal, (1, 1, 1), 2.0).sum() == 2
    np.testing.assert_array_equal(largest_component(mask), kept)


def test_the_strongest_component_holds_the_highest_value_not_the_most_voxels():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:3, 1:3, 1:3] = True  # 8 voxels, the map's peak
    mask[5:9, 5:9, 5:9] = True  # 64 voxels, weaker
    values = np.where(mask, 0.6, 0.0)
    values[2, 2, 2] = 0.9
    values[0, 0, 0] = 1.0  # outside the mask: not a component's value
    strongest = strongest_component(mask, values)
    assert strongest.sum() == 8 and strongest[1, 1, 1] and not strongest[6, 6, 6]
    np.testing.assert_array_equal(largest_component(mask), mask & ~strongest)
    assert not strongest_component(np.zeros_like(mask), values).any()


def test_of_components_that_share_the_peak_the_strongest_is_the_one_with_more_evidence():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:3, 1:3, 1:3] = True  # first in raster order, one voxel at the peak
    mask[5:9, 5:9, 5:9] = True  # also at the peak, and high throughout
    values = np.where(mask, 0.2, 0.0)
    values[5:9, 5:9, 5:9] = 0.8
    values[1, 1, 1] = values[6, 6, 6] = 1.0
    strongest = strongest_component(mask, values)
    assert strongest.sum() == 64 and strongest[6, 6, 6] and not strongest[1, 1, 1]


def test_keep_component_at_keeps_the_clicked_one_and_refuses_background():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:3, 1:3, 1:3] = True
    mask[6:9, 6:9, 6:9] = True
    kept = keep_component_at(mask, (1, 2, 1))
    assert kept.sum() == 8 and kept[1, 1, 1] and not kept[7, 7, 7]
    with pytest.raises(ValueError, match="not part of the mask"):
        keep_component_at(mask, (5, 5, 5))
    with pytest.raises(ValueError, match="outside"):
        keep_component_at(mask, (10, 0, 0))


def test_fill_holes_in_3d_and_per_slice():
    shell = np.zeros((12, 12, 12), bool)
    shell[2:10, 2:10, 2:10] = True
    shell[4:8, 4:8, 4:8] = False  # enclosed cavity
    assert fill_holes(shell).sum() == 8**3
    tube = np.zeros((12, 12, 12), bool)
    tube[2:10, 2:10, :] = True
    tube[4:8, 4:8, :] = False  # open along axis 2: no 3-D hole
    assert fill_holes(tube).sum() == tube.sum()
    assert fill_holes(tube, axis=2).sum() == 8 * 8 * 12
    assert fill_holes(tube, axis=0).sum() == tube.sum()  # slices along x cut the ring open


def test_interpolating_between_two_discs_gives_intermediate_discs():
    shape = (64, 64, 11)
    yy, xx = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    mask = np.zeros(shape, bool)
    mask[..., 0] = (yy - 32) ** 2 + (xx - 32) ** 2 <= 10**2
    mask[..., 10] = (yy - 32) ** 2 + (xx - 32) ** 2 <= 20**2
    out = interpolate_slices(mask, axis=2)
    for k in range(1, 10):
        radius = 10 + k  # linear in position between radius 10 and radius 20
        expected = (yy - 32) ** 2 + (xx - 32) ** 2 <= radius**2
        assert (out[..., k] ^ expected).sum() <= 2 * np.pi * radius * 1.1  # one-pixel rim
        assert abs(np.sqrt(out[..., k].sum() / np.pi) - radius) < 1.0
    np.testing.assert_array_equal(out[..., [0, 10]], mask[..., [0, 10]])


def test_interpolation_uses_given_key_slices_and_slides_overlapping_shapes():
    mask = np.zeros((40, 40, 7), bool)
    mask[5:15, 5:15, 0] = True
    mask[11:21, 5:15, 6] = True  # overlapping the first: it slides
    mask[0, 39, 3] = True  # a stray voxel in between, replaced by the interpolation
    out = interpolate_slices(mask, axis=-1, slices=[0, 6])
    assert not out[0, 39, 3]
    centres = [np.argwhere(out[..., k]).mean(axis=0)[0] for k in range(7)]
    assert all(
        a < b for a, b in zip(centres[:-1], centres[1:], strict=True)
    )  # the square slides along x
    with pytest.raises(ValueError, match="empty"):
        interpolate_slices(mask, axis=2, slices=[0, 2])


def test_interpolation_respects_in_plane_spacing_and_never_edits_the_input():
    mask = np.zeros((7, 30, 60), bool)
    zz, xx = np.meshgrid(np.arange(30), np.arange(60), indexing="ij")
    # ellipses that are discs in mm on a 2 mm x 1 mm grid
    mask[0] = ((zz - 15) * 2.0) ** 2 + (xx - 30) ** 2 <= 10**2
    mask[6] = ((zz - 15) * 2.0) ** 2 + (xx - 30) ** 2 <= 22**2
    before = mask.copy()
    out = interpolate_slices(mask, axis=0, spacing=(3.0, 2.0, 1.0))
    np.testing.assert_array_equal(mask, before)
    middle = out[3]
    rows, cols = np.nonzero(middle)
    assert abs((cols.max() - cols.min()) / 2 - 16) <= 1.0
    assert abs((rows.max() - rows.min()) * 2.0 / 2 - 16) <= 2.0


def test_grow_matches_the_distance_transform_of_the_whole_array_at_its_edges():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    mask = np.zeros((20, 25, 12), bool)
    mask[rng.integers(0, 20, 6), rng.integers(0, 25, 6), rng.integers(0, 12, 6)] = True
    mask[0, 0, 0] = mask[19, 24, 11] = True
    spacing = (1.2, 0.9, 3.0)
    full = ndimage.distance_transform_edt(~mask, sampling=spacing) <= 4.0
    np.testing.assert_array_equal(grow(mask, spacing, 4.0), full)
