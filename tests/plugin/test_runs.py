"""The inspector's runs without Qt: slices merged, the protocol shown and why, masks."""

import numpy as np

from equicam.core.inference import CamResult
from equicam.core.refine import MaskSettings, refined_mask
from equicam.plugin.runs import Run, layer_mask, merged, protocol_for, shown_maps


def _result(slices, value):
    shape = (4, 6, 6)
    computed = np.zeros(4, bool)
    computed[slices] = True
    maps = np.zeros(shape, np.float32)
    maps[computed] = value
    brain = np.ones(shape, bool)
    return CamResult(
        "cam",
        {"flair": maps},
        {"mean": maps.copy()},
        {"flair": computed * 0.9},
        computed,
        {"flair": maps * 2},
        brain,
    )


def test_runs_add_up_slice_by_slice_and_refined_waits_for_the_whole_volume():
    settings = {"threshold": 0.5, "largest_only": True, "min_component_mm3": 0.0, "grow_mm": 1.0}
    meta = {
        "threshold": 0.4,
        "protocol": "refined",
        "refined": {"z_sigma_mm": 0.0, "gate": 0.5, "maps": {"flair": settings}},
    }
    first = _result([1], 0.6)
    both = merged(first, _result([2], 0.3))
    assert both.computed.tolist() == [False, True, True, False]
    np.testing.assert_allclose(both.maps["flair"][:, 0, 0], [0, 0.6, 0.3, 0])
    assert protocol_for("checkpoint", meta) == ("refined", "")
    assert protocol_for("guided", {}) == ("paper", "this checkpoint has no guided calibration")
    assert protocol_for("paper", {"kind": "segnet"}) == ("threshold", "")

    run = Run((), both, (2.0, 1.0, 1.0), {}, meta, {})
    _, _, protocol, note = shown_maps(run, "refined")
    assert (protocol, note) == ("paper", "refined needs the whole volume: run it")
    run.result = merged(both, _result([0, 3], 0.8))
    _, _, protocol, note = shown_maps(run, "refined")  # fused_mean has no refined settings
    assert (protocol, note) == ("paper", "no refined settings for fused_mean")
    meta["refined"]["maps"]["fused_mean"] = settings
    maps, used, protocol, note = shown_maps(run, "refined")
    assert (protocol, note) == ("refined", "") and used["flair"] == settings
    assert maps["flair"].max() == 1.0  # normalised over the volume

    volume = maps["flair"]
    np.testing.assert_array_equal(
        layer_mask(volume, {"threshold": 0.5}, 0.7, None, ()), volume >= 0.7
    )
    grown = layer_mask(volume, settings, 0.5, run.result.brain, run.scale)
    expected = refined_mask(volume, run.result.brain, run.scale, MaskSettings(**settings))
    np.testing.assert_array_equal(grown, expected)
