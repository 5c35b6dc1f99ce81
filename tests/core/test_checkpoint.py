"""Checkpoints load without unpickling, and every wrong file is refused by name."""

import json

import pytest
import torch
from safetensors.torch import save_file

from equicam.core import checkpoint as checkpoint_module
from equicam.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from equicam.core.model import ModelConfig, MultiModalCAM
from equicam.core.preprocess import NORMALISATION

CONFIG = ModelConfig(modalities=("t1", "flair"), widths=(4, 8, 8, 8), input_size=32)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = MultiModalCAM(CONFIG)
    path = save_checkpoint(tmp_path / "tiny.safetensors", model, {"threshold": 0.4})
    return path, model


def test_round_trip_keeps_weights_and_metadata(saved, tmp_path):
    path, model = saved
    loaded, meta = load_checkpoint(path, modalities=["flair"])
    assert meta["threshold"] == 0.4 and meta["model"] == CONFIG.to_dict()
    assert meta["preprocessing"] == NORMALISATION and meta["format"] == 1
    assert loaded.config == CONFIG and not loaded.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]


@pytest.mark.parametrize("name", ["equivariant", "second-stage"])
def test_loading_draws_nothing_from_the_global_random_generator(name):
    """A load in the plugin's background thread must not shift a seeded run in another."""
    from equicam.core.checkpoint import load_model

    torch.manual_seed(0)
    state = torch.get_rng_state()
    model, _ = load_model(name)
    assert torch.equal(torch.get_rng_state(), state)
    weights = list(model.state_dict().values())
    assert all(w.device.type == "cpu" for w in weights)
    assert all(w.dtype == torch.float32 for w in weights if w.is_floating_point())
    assert all(p.requires_grad for p in model.parameters())  # fine-tuning starts from a load


def test_a_pickle_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.safetensors"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match="never unpickled") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)
    assert not marker.exists()


def test_wrong_files_are_refused_by_name(saved, tmp_path):
    path, _ = saved
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:100])
    cut_weights = tmp_path / "cut_weights.safetensors"
    cut_weights.write_bytes(path.read_bytes()[:-64])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 4096)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    not_json = tmp_path / "not_json.safetensors"
    save_file({"w": torch.zeros(2)}, not_json, metadata={"equicam": "{oops"})
    future = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(2)}, future, metadata={"equicam": json.dumps({"format": 99})})
    cases = {
        truncated: "not a readable safetensors",
        cut_weights: "not a readable safetensors",
        garbage: "not a readable safetensors",
        not_json: "not valid JSON",
        future: "unsupported checkpoint format 99",
        foreign: "without equicam metadata",
        tmp_path / "missing.safetensors": "no such checkpoint",
    }
    for bad, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as error:
            load_checkpoint(bad)
        assert str(bad) in str(error.value)


def test_other_modalities_or_architecture_are_refused(saved, tmp_path):
    path, model = saved
    with pytest.raises(CheckpointError, match="not for t2"):
        load_checkpoint(path, modalities=["t1", "t2"])
    other = tmp_path / "other.safetensors"
    state = dict(model.state_dict())
    meta = {"format": 1, "model": {**CONFIG.to_dict(), "widths": [8, 16, 16, 16]}}
    save_file(state, other, metadata={"equicam": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="another architecture"):
        load_checkpoint(other)
    fewer = tmp_path / "fewer.safetensors"
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("nets.flair")}
    save_file(
        state, fewer, metadata={"equicam": json.dumps({"format": 1, "model": CONFIG.to_dict()})}
    )
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(fewer)


def test_other_preprocessing_or_non_finite_weights_are_refused(saved, tmp_path):
    path, model = saved
    meta = {"format": 1, "model": CONFIG.to_dict()}
    other = tmp_path / "per_slice.safetensors"
    save_file(
        model.state_dict(),
        other,
        metadata={"equicam": json.dumps({**meta, "preprocessing": "zscore-slice"})},
    )
    with pytest.raises(CheckpointError, match="trained on 'zscore-slice' inputs"):
        load_checkpoint(other)
    vague = tmp_path / "vague.safetensors"
    save_file(
        model.state_dict(),
        vague,
        metadata={"equicam": json.dumps({**meta, "bias_correction": "yes"})},
    )
    with pytest.raises(CheckpointError, match="vague.safetensors.*bias_correction must be true"):
        load_checkpoint(vague)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["nets.t1.head.weight"][0, 0] = float("nan")
    broken = tmp_path / "nan.safetensors"
    save_file(state, broken, metadata={"equicam": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="non-finite weights .* nets.t1.head.weight"):
        load_checkpoint(broken)


@pytest.mark.parametrize("sizes", [[], [96] * 5, [8], [96, 4096], [96.5], "96", [True]])
def test_input_sizes_that_are_not_1_to_4_sizes_are_refused_by_name(saved, tmp_path, sizes):
    path, model = saved
    meta = {"format": 1, "model": CONFIG.to_dict(), "input_sizes": sizes}
    bad = tmp_path / "sizes.safetensors"
    save_file(model.state_dict(), bad, metadata={"equicam": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="sizes.safetensors: metadata input_sizes must be"):
        load_checkpoint(bad)


def test_saving_is_atomic_and_leaves_no_temporary_file(saved, tmp_path):
    path, model = saved
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_checkpoint(path, model, {"threshold": object()})  # not JSON-able
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]


@pytest.mark.parametrize("name", ["equivariant", "baseline"])
def test_bundled_names_load_from_the_package(name):
    model, meta = load_checkpoint(name, modalities=["t2"])
    assert set(model.modalities) == {"t1", "t1ce", "t2", "flair"}
    assert 0 < meta["threshold"] < 1
    assert meta["bias_correction"] is True  # calibrated on corrected validation patients
    assert meta["calibrated_on"]["cache"] == "data/val200_bc_cache"


def test_the_bundled_second_stage_learnt_guided_masks_and_loads_as_one():
    from equicam.core.checkpoint import load_model
    from equicam.core.segnet import SegNet

    model, meta = load_model("second-stage")
    assert isinstance(model, SegNet) and meta["kind"] == "segnet"
    assert set(model.modalities) == {"t1", "t1ce", "t2", "flair"}
    assert 0 < meta["threshold"] < 1
    assert meta["trained_on"]["protocol"] == "guided"


def test_a_bundled_name_without_its_file_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "BUNDLED_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="has not been trained and bundled yet") as error:
        load_checkpoint("equivariant")
    assert str(tmp_path / "equivariant.safetensors") in str(error.value)


def test_fusion_weights_travel_with_the_checkpoint_and_bad_ones_are_refused(tmp_path):
    model = MultiModalCAM(CONFIG)
    model.fusion_weights = {"t1": 0.25, "flair": 0.75}
    path = save_checkpoint(tmp_path / "w.safetensors", model, {"threshold": 0.5})
    loaded, meta = load_checkpoint(path)
    assert loaded.fusion_weights == meta["fusion_weights"] == {"t1": 0.25, "flair": 0.75}
    for bad in ({"t2": 1.0}, {"t1": -0.5}, [0.5, 0.5], {"flair": "high"}):
        meta = {"format": 1, "model": CONFIG.to_dict(), "fusion_weights": bad}
        save_file(
            MultiModalCAM(CONFIG).state_dict(),
            tmp_path / "bad.safetensors",
            metadata={"equicam": json.dumps(meta)},
        )
        with pytest.raises(CheckpointError, match="fusion_weights"):
            load_checkpoint(tmp_path / "bad.safetensors")
