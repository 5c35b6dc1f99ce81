"""Post-processing protocols on hand-made CAM results with known answers."""

import numpy as np
import pytest

from equicam import cli
from equicam.core import refine
from equicam.core.inference import CamResult
from equicam.core.refine import (
    MaskSettings,
    Refinement,
    apply_protocol,
    default_protocol,
    refined_maps,
    refined_mask,
    refinement_of,
)

SPACING = (2.0, 1.0, 1.0)


def _result(raw: dict, probs: dict) -> CamResult:
    """A CamResult whose paper maps are the per-slice min-max of ``raw``, gated at 0.5."""
    maps = {}
    for m, volume in raw.items():
        top = volume.max(axis=(1, 2), keepdims=True)
        maps[m] = (
            np.where(top > 0, volume / np.maximum(top, 1e-6), 0) * (probs[m] > 0.5)[:, None, None]
        )
        maps[m] = maps[m].astype(np.float32)
    fused = {"mean": np.mean(list(maps.values()), axis=0).astype(np.float32)}
    shape = next(iter(raw.values())).shape
    return CamResult(
        "cam",
        maps,
        fused,
        {m: np.asarray(p, np.float32) for m, p in probs.items()},
        np.ones(shape[0], bool),
        {m: v.astype(np.float32) for m, v in raw.items()},
        np.ones(shape, bool),
    )


def test_the_protocol_names_are_the_command_lines():
    assert cli.PROTOCOLS == refine.PROTOCOLS


def test_per_volume_normalisation_keeps_a_weak_slice_weak():
    raw = np.zeros((5, 10, 10), np.float32)
    raw[1, 2:4, 2:4] = 4.0  # strong response
    raw[3, 6:8, 6:8] = 1.0  # weak response on another slice
    result = _result({"flair": raw}, {"flair": np.array([0, 0.9, 0.9, 0.9, 0])})
    # the paper's per-slice min-max lifts both to 1
    assert result.maps["flair"][1].max() == result.maps["flair"][3].max() == 1.0
    maps = refined_maps(result, SPACING[0], Refinement(0.0, 0.5))
    assert maps["flair"][1].max() == pytest.approx(1.0)
    assert maps["flair"][3].max() == pytest.approx(0.25)
    assert set(maps) == {"flair", "fused_mean"}


def test_the_z_smoothed_gate_drops_an_isolated_slice_and_keeps_a_run():
    raw = np.ones((9, 4, 4), np.float32)
    probs = np.array([0.0, 0.9, 0.0, 0.0, 0.0, 0.9, 0.9, 0.9, 0.0])
    result = _result({"t2": raw}, {"t2": probs})
    unsmoothed = refined_maps(result, 2.0, Refinement(0.0, 0.5))["t2"]
    np.testing.assert_array_equal(unsmoothed.max(axis=(1, 2)) > 0, probs > 0.5)
    smoothed = refined_maps(result, 2.0, Refinement(2.0, 0.5))["t2"]  # sigma one slice
    kept = smoothed.max(axis=(1, 2)) > 0
    assert not kept[1] and kept[6]
    # the gate does not only remove: a gap of one slice inside a run is bridged
    probs_gap = np.array([0.0, 0.9, 0.9, 0.2, 0.9, 0.9, 0.0, 0.0, 0.0])
    bridged = refined_maps(_result({"t2": raw}, {"t2": probs_gap}), 2.0, Refinement(2.0, 0.5))
    assert bridged["t2"][3].max() > 0


def test_a_refined_mask_thresholds_filters_components_and_grows_inside_the_brain():
    volume = np.zeros((10, 40, 40), np.float32)
    volume[4:7, 10:20, 10:20] = 0.9  # the tumour: 3 x 10 x 10 voxels of 2 mm3
    volume[2, 30, 30] = 0.8  # a speck of 2 mm3
    volume[4:7, 30:33, 5:8] = 0.3  # below the threshold
    brain = np.ones(volume.shape, bool)
    brain[:, :, 22:] = False  # growth stops at the brain's edge
    plain = refined_mask(volume, np.ones_like(brain), SPACING, MaskSettings(0.5))
    assert plain.sum() == 300 + 1
    largest = refined_mask(volume, brain, SPACING, MaskSettings(0.5, largest_only=True))
    assert largest.sum() == 300 and not largest[2, 30, 30]
    sized = refined_mask(volume, brain, SPACING, MaskSettings(0.5, min_component_mm3=4.0))
    np.testing.assert_array_equal(sized, largest)
    grown = refined_mask(volume, brain, SPACING, MaskSettings(0.5, True, 0.0, 3.0))
    assert grown[4, 10:20, 7].all() and not grown[4, 15, 6]  # 3 mm in-plane
    assert grown[3, 15, 15] and not grown[2, 15, 15]  # 2 mm slices: one slice up and down
    assert not grown[:, :, 22:].any()


def test_paper_protocol_is_todays_maps_and_masks():
    raw = np.zeros((4, 8, 8), np.float32)
    raw[1:3, 2:5, 2:5] = np.linspace(0.1, 2.0, 9).reshape(3, 3)
    result = _result({"t1": raw}, {"t1": np.array([0, 0.9, 0.9, 0])})
    meta = {"threshold": 0.5, "thresholds": {"t1": 0.3}}
    maps, masks, settings = apply_protocol(result, "paper", meta, SPACING)
    assert settings == {"thresholds": {"t1": 0.3, "fused_mean": 0.5}}
    for name, mask in result.masks(settings["thresholds"]).items():
        np.testing.assert_array_equal(masks[name], mask)
        np.testing.assert_array_equal(maps[name], result.all_maps()[name])


def test_refined_protocol_uses_the_checkpoint_settings_and_a_threshold_override():
    raw = np.zeros((6, 12, 12), np.float32)
    raw[2:4, 3:6, 3:6] = 1.0
    result = _result({"t1": raw}, {"t1": np.array([0, 0, 0.9, 0.9, 0, 0])})
    settings = {"threshold": 0.5, "largest_only": True, "min_component_mm3": 0.0, "grow_mm": 1.0}
    meta = {
        "refined": {
            "z_sigma_mm": 0.0,
            "gate": 0.5,
            "maps": {"t1": settings, "fused_mean": settings},
        }
    }
    maps, masks, used = apply_protocol(result, "refined", meta, SPACING)
    assert masks["t1"].dtype == np.uint8
    assert masks["t1"].sum() == 2 * (9 + 4 * 3)  # each 3 x 3 square grows by its 4 sides
    assert used["maps"]["t1"] == settings
    _, _, overridden = apply_protocol(result, "refined", meta, SPACING, threshold=0.7)
    assert overridden["maps"]["t1"]["threshold"] == 0.7
    assert Refinement.from_dict(meta["refined"]).to_dict() == meta["refined"]


def test_a_checkpoint_without_refined_settings_is_a_clear_error():
    assert default_protocol({}) == "paper"
    assert default_protocol({"protocol": "refined", "refined": {}}) == "refined"
    with pytest.raises(ValueError, match="no calibrated settings.*training.calibrate"):
        refinement_of({"threshold": 0.5}, "old.safetensors")
    with pytest.raises(ValueError, match="not understood"):
        refinement_of({"refined": {"gate": 0.5}})
    with pytest.raises(ValueError, match="unknown protocol"):
        refine.check_protocol("best")
    refinement = Refinement.from_dict({"z_sigma_mm": 0, "gate": 0.5, "maps": {}})
    with pytest.raises(ValueError, match="no calibrated settings for map 'flair'"):
        refinement.mask_settings("flair")


def test_the_guided_mask_is_the_bright_region_its_seed_touches_and_nothing_else():
    raw = np.zeros((6, 16, 16), np.float32)
    raw[2:4, 4:6, 4:6] = 1.0  # the CAM peaks inside the lesion
    flair = np.zeros((6, 16, 16), np.float32)
    flair[1:5, 2:9, 2:9] = 2.5  # the lesion, larger than the CAM's peak
    flair[1:4, 12:15, 12:15] = 3.0  # a bright mimic the CAM never touches
    result = _result({"flair": raw}, {"flair": np.array([0, 0, 0.9, 0.9, 0, 0])})
    settings = MaskSettings(0.5, guide="flair", guide_z=1.5)
    meta = {"guided": Refinement(0.0, 0.5, {"flair": settings, "fused_mean": settings}).to_dict()}
    _, masks, used = apply_protocol(result, "guided", meta, SPACING, images={"flair": flair})
    assert np.array_equal(masks["flair"].astype(bool), flair == 2.5)
    assert used["maps"]["flair"]["guide"] == "flair" and used["maps"]["flair"]["guide_z"] == 1.5
    # A threshold above the map's peak seeds nothing, so the mask is empty.
    _, none, _ = apply_protocol(
        result, "guided", meta, SPACING, threshold=1.5, images={"flair": flair}
    )
    assert not none["flair"].any()
    with pytest.raises(ValueError, match="needs the case's flair scan"):
        apply_protocol(result, "guided", meta, SPACING)
    with pytest.raises(ValueError, match="no calibrated settings for the guided protocol"):
        apply_protocol(result, "guided", {"refined": meta["guided"]}, SPACING)
    # A bright band running far from the seed is cut at the reach.
    band = np.zeros((6, 16, 16), np.float32)
    band[2:4, 4, 4:16] = 2.5
    reach = MaskSettings(0.5, guide="flair", guide_z=1.5, guide_reach_mm=3.0)
    seed = raw > 0.5
    cut = refined_mask(raw, np.ones_like(seed), SPACING, reach, {"flair": band})
    assert np.array_equal(np.flatnonzero(cut[2, 4]), np.arange(4, 9))  # columns 4-5 and 3 mm
    # With strongest_only, a weaker second seed no longer pulls in the mimic it touches.
    twice = raw.copy()
    twice[1:3, 12:14, 12:14] = 0.8
    both = refined_mask(twice, np.ones_like(seed), SPACING, settings, {"flair": flair})
    assert np.array_equal(both, flair > 0)
    strongest = MaskSettings(0.5, guide="flair", guide_z=1.5, strongest_only=True)
    one = refined_mask(twice, np.ones_like(seed), SPACING, strongest, {"flair": flair})
    assert np.array_equal(one, flair == 2.5)
    # Seeded from the weaker spot alone, the mask is the region that spot touches.
    weak = refine.guided_mask(
        twice == 0.8, np.ones_like(seed), SPACING, settings, {"flair": flair}
    )
    assert np.array_equal(weak, flair == 3.0)
    stored = Refinement(0.0, 0.5, {"flair": strongest}).to_dict()
    assert stored["maps"]["flair"]["strongest_only"] is True
    assert Refinement.from_dict(stored).mask_settings("flair") == strongest
    del stored["maps"]["flair"]["strongest_only"]  # written before the setting existed
    assert not Refinement.from_dict(stored).mask_settings("flair").strongest_only
    assert MaskSettings(0.5).to_dict().keys() == {
        "threshold",
        "largest_only",
        "min_component_mm3",
        "grow_mm",
    }
