"""The seed rules that bench.guided_seeds compares."""

import numpy as np

from bench.guided_seeds import seed_component
from equicam.core.refine import MaskSettings


def _two_spots():
    """A thresholded map with two spots: a small one holding the map's peak, where one of
    two sequences agrees, and a larger, slightly weaker one where both agree."""
    level = np.zeros((1, 12, 12), np.float32)
    level[0, 1:3, 1:3] = 1.0
    level[0, 6:11, 6:11] = 0.8
    agree = np.zeros_like(level)
    agree[0, 6:11, 6:11] = 0.9
    maps = {"flair": level, "t2": agree}
    return level >= 0.5, level, maps


def test_each_rule_picks_its_component():
    seeds, level, maps = _two_spots()
    strongest = MaskSettings(0.5, guide="flair", guide_z=1.0, strongest_only=True)
    small, large = np.zeros_like(seeds), np.zeros_like(seeds)
    small[0, 1:3, 1:3] = True
    large[0, 6:11, 6:11] = True
    assert np.array_equal(seed_component("peak", seeds, level, maps, strongest), small)
    assert np.array_equal(seed_component("protocol", seeds, level, maps, strongest), small)
    whole = MaskSettings(0.5, guide="flair", guide_z=1.0, strongest_only=False)
    assert np.array_equal(seed_component("protocol", seeds, level, maps, whole), seeds)
    assert np.array_equal(seed_component("whole", seeds, level, maps, strongest), seeds)
    # the mean of the two maps: 0.5 on the small spot, 0.85 on the large one
    for rule in ("mean-peak", "mean-sum", "geometric-peak"):
        assert np.array_equal(seed_component(rule, seeds, level, maps, strongest), large), rule


def test_an_empty_seed_stays_empty():
    seeds, level, maps = _two_spots()
    settings = MaskSettings(0.5, guide="flair", guide_z=1.0, strongest_only=True)
    for rule in ("peak", "mean-sum"):
        assert not seed_component(rule, np.zeros_like(seeds), level, maps, settings).any()
