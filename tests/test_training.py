"""Training: smoke run, checkpoint, resume, DDP with two gloo processes, config handling."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from equicam.core.checkpoint import load_checkpoint
from tests.conftest import two_process_torchrun, write_tiny_cache
from training.train import load_config, parse_override, train

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "training" / "configs"


def _overrides(cache, run_dir, *extra):
    return [
        f"data.cache='{cache}'",
        f"train.run_dir='{run_dir}'",
        "model.widths=[4, 8, 8, 8]",
        "model.input_size=32",
        "train.batch_size=8",
        "train.log_every=1000",
        "train.lr=0.003",
        "train.epoch_slices=0",
        *extra,
    ]


def test_a_short_run_lowers_the_loss_and_writes_a_loadable_checkpoint(tmp_path):
    # A cache made with --bias-correction: the checkpoint says so, for inference to do the same.
    cache = write_tiny_cache(tmp_path / "cache")
    meta = json.loads((cache / "meta.json").read_text())
    (cache / "meta.json").write_text(json.dumps({**meta, "bias_correction": True}))
    # No warm-up: ramping the equivariance terms in would raise the total on purpose.
    overrides = _overrides(
        cache, tmp_path, "train.epochs=3", "train.warmup_epochs=0", "train.select='accuracy'"
    )
    config = load_config(CONFIGS / "cpu_full.toml", overrides)
    path = train(config)
    model, meta = load_checkpoint(path, modalities=["flair"])
    assert meta["variant"] == "full" and 0.2 <= meta["threshold"] <= 0.8
    assert meta["bias_correction"] is True
    assert meta["config"]["loss"] == config["loss"] and meta["model"]["widths"] == [4, 8, 8, 8]
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    # The classification term falls. The total need not: summed CMER grows while the teachers
    # learn to call slices tumour, since each such slice opens its gate.
    first, last = (
        np.mean([v["cls"] for v in h["loss"].values()]) for h in (history[0], history[-1])
    )
    assert last < first
    assert history[-1]["loss"]["flair"]["cmer"] > 0
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert set(meta["thresholds"]) >= {"t1", "flair", "fused_mean", "fused_max"}
    for m, epoch in meta["selected_epoch"].items():
        accuracies = [h["val_accuracy"][m] for h in history]
        assert accuracies[epoch - 1] == max(accuracies) == meta["val_accuracy"][m]


def test_selecting_by_validation_dice_keeps_the_best_fused_epoch(tiny_cache, tmp_path):
    extra = ("train.epochs=3", "train.select='dice'", "model.input_norm='slice'")
    path = train(load_config(CONFIGS / "cpu_full.toml", _overrides(tiny_cache, tmp_path, *extra)))
    _, meta = load_checkpoint(path)
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    fused = [h["val_dice"]["fused_mean"] for h in history]
    best = len(fused) - int(np.argmax(fused[::-1]))
    assert set(meta["selected_epoch"].values()) == {best}
    assert meta["model"]["input_norm"] == "slice"
    with pytest.raises(ValueError, match="train.select"):
        train(
            load_config(
                CONFIGS / "cpu_full.toml", _overrides(tiny_cache, tmp_path, "train.select='loss'")
            )
        )


def test_resume_continues_after_the_last_epoch(tiny_cache, tmp_path, capsys):
    train(
        load_config(
            CONFIGS / "cpu_baseline.toml", _overrides(tiny_cache, tmp_path, "train.epochs=1")
        )
    )
    train(
        load_config(
            CONFIGS / "cpu_baseline.toml",
            _overrides(tiny_cache, tmp_path, "train.epochs=2", "train.resume=true"),
        )
    )
    assert "resumed after epoch 1" in capsys.readouterr().out
    epochs = [
        json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2]
    # A fresh run in the same folder starts a new log.
    train(
        load_config(
            CONFIGS / "cpu_baseline.toml", _overrides(tiny_cache, tmp_path, "train.epochs=1")
        )
    )
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_refuses_a_state_it_cannot_continue(tiny_cache, tmp_path):
    def run(*extra: str) -> None:
        train(
            load_config(
                CONFIGS / "cpu_baseline.toml",
                _overrides(tiny_cache, tmp_path, "train.epochs=2", "train.resume=true", *extra),
            )
        )

    run("train.epochs=1")
    state_path = tmp_path / "last_state.pt"
    with pytest.raises(ValueError, match=r"last_state\.pt: cannot resume.*model config"):
        run("model.widths=[8,16,32,32]")
    state = torch.load(state_path, weights_only=True)
    del state["model_config"]
    torch.save(state, state_path)
    with pytest.raises(ValueError, match=r"last_state\.pt: cannot resume.*older version"):
        run()


def test_two_gloo_processes_end_with_identical_weights(tiny_cache, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}", "OMP_NUM_THREADS": "1"}
    command = two_process_torchrun(
        "training.train",
        "--config",
        str(CONFIGS / "cpu_full.toml"),
        *_overrides(
            tiny_cache,
            tmp_path,
            "train.epochs=1",
            "train.save_rank_states=true",
            "train.device='cpu'",
        ),
    )
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = load_file(tmp_path / "rank0_parameters.safetensors")
    rank1 = load_file(tmp_path / "rank1_parameters.safetensors")
    assert rank0.keys() == rank1.keys() and len(rank0) > 10
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0)
    assert (tmp_path / "checkpoint.safetensors").is_file()


def test_config_overrides_parse_and_bad_keys_are_refused():
    assert parse_override("train.epochs=2") == {"train": {"epochs": 2}}
    assert parse_override("model.widths=[8, 16]") == {"model": {"widths": [8, 16]}}
    assert parse_override("data.cache=some/path") == {"data": {"cache": "some/path"}}
    config = load_config(CONFIGS / "cpu_baseline.toml", ["loss.er=0.5"])
    assert config["loss"]["er"] == 0.5 and config["loss"]["kl"] == 0.0
    # A variant's own tables override its base; what it does not set comes from the base.
    assert config["train"]["epochs"] == 8 and config["train"]["min_tumour_mm2"] == 100
    assert config["train"]["batch_size"] == 16  # from the base
    kl = load_config(CONFIGS / "cpu_kl.toml")
    assert (
        kl["train"]["epochs"] == 1 and kl["train"]["lr"] == 1e-3 and kl["train"]["augment"] == 0.3
    )
    with pytest.raises(ValueError, match="unknown config key 'train.epoch'"):
        load_config(CONFIGS / "cpu_full.toml", ["train.epoch=3"])
    with pytest.raises(ValueError, match="not key=value"):
        parse_override("epochs")


@pytest.mark.parametrize("family", ["paper", "cpu"])
def test_every_variant_config_loads_with_only_its_own_terms(family):
    losses = {}
    for variant in ("baseline", "er", "kl", "er_kl", "full"):
        config = load_config(CONFIGS / f"{family}_{variant}.toml")
        assert config["variant"] == variant
        losses[variant] = config["loss"]
    terms = {v: {k for k in ("kl", "er", "cmer") if loss[k] > 0} for v, loss in losses.items()}
    assert terms == {
        "baseline": set(),
        "er": {"er"},
        "kl": {"kl"},
        "er_kl": {"er", "kl"},
        "full": {"er", "kl", "cmer"},
    }
    if family == "paper":
        full = losses["full"]
        assert (full["kl"], full["er"], full["cmer"]) == (0.5, 1, 1)  # METHOD.md
        assert full["cmer_reduction"] == "mean"  # as published
    else:
        assert losses["full"]["cmer_reduction"] == "sum"


def test_learning_rate_schedules():
    from training.train import learning_rate

    assert learning_rate(1e-3, 2.5, 3, "constant") == 1e-3
    cosine = [learning_rate(1e-3, p, 3, "cosine") for p in np.linspace(0, 3, 13)]
    assert cosine[0] == pytest.approx(1e-3) and cosine[-1] == pytest.approx(0, abs=1e-12)
    assert cosine[6] == pytest.approx(5e-4)
    assert np.all(np.diff(cosine) < 0)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        learning_rate(1e-3, 0, 3, "step")


def test_warm_up_ramps_the_equivariance_terms_only():
    from equicam.core.losses import LossWeights
    from training.train import warmed_up

    weights = LossWeights(cls=1.0, kl=0.5, er=10.0, cmer=10.0, temperature=2.0)
    half = warmed_up(weights, 0.5, 1.0)
    assert (half.cls, half.temperature) == (1.0, 2.0)
    assert (half.kl, half.er, half.cmer) == (0.25, 5.0, 5.0)
    assert warmed_up(weights, 0.0, 1.0).er == 0
    assert warmed_up(weights, 1.0, 1.0) == weights
    assert warmed_up(weights, 0.5, 0.0) == weights


def test_balanced_sampler_evens_out_the_classes_on_every_rank():
    from training.data import BalancedSampler

    labels = np.array([1] * 900 + [0] * 100)
    sampler = BalancedSampler(labels, seed=3)
    draws = list(sampler)
    assert len(draws) == len(sampler) == 1000
    assert 0.45 < labels[draws].mean() < 0.55  # 0.9 without balancing
    assert list(BalancedSampler(labels, seed=3)) == draws
    sampler.set_epoch(1)
    assert list(sampler) != draws
    assert len(list(BalancedSampler(labels, seed=3, draws=7))) == 7
    ranks = [list(BalancedSampler(labels, seed=3, rank=r, world=3)) for r in range(3)]
    assert [len(r) for r in ranks] == [334] * 3 and ranks[0] != ranks[1]
    assert 0.45 < labels[np.concatenate(ranks)].mean() < 0.55


def test_small_tumour_slices_leave_the_training_draw_by_area_in_mm2(tiny_cache):
    from training.data import SliceCache

    data = SliceCache(tiny_cache, "train", ["flair"])
    areas = data.tumour_areas_mm2()
    # 8 x 8 tumour pixels of 2 x 2 mm once cached (64 mm slices at 32 px)
    assert set(areas[data.labels == 1]) == {256.0} and set(areas[data.labels == 0]) == {0.0}
    assert data.drop_small_tumours(200.0) == 0 and len(data) == 32
    assert data.drop_small_tumours(300.0) == 16
    assert len(data) == 16 and not data.labels.any()
    image, label = data[0]
    assert image.shape == (1, 32, 32) and label == 0


def test_init_starts_from_a_checkpoint_of_the_same_architecture_only(tmp_path):
    from equicam.core.checkpoint import save_checkpoint
    from equicam.core.model import ModelConfig, MultiModalCAM
    from training.train import _initialise

    config = ModelConfig(widths=(4, 8, 8, 8), input_size=32)
    trained = MultiModalCAM(config)
    path = save_checkpoint(tmp_path / "start.safetensors", trained, {"threshold": 0.5})
    fresh = MultiModalCAM(config)
    assert not torch.equal(fresh.nets["t1"].head.weight, trained.nets["t1"].head.weight)
    _initialise(fresh, str(path))
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    other = MultiModalCAM(ModelConfig(widths=(4, 8, 8, 16), input_size=32))
    with pytest.raises(ValueError, match="train.init="):
        _initialise(other, str(path))
