"""The training commands on bad input: one line naming the file and the problem, exit 2."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from equicam.core.errors import EquicamError
from tests.test_training import CONFIGS, ROOT, _overrides
from training.data import SliceCache
from training.train import load_config


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_one_line(result: subprocess.CompletedProcess, module: str, path, phrase: str):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"{module}: error: "), result.stderr
    assert str(path) in lines[0] and phrase in lines[0], lines[0]


@pytest.fixture
def broken_cache(tiny_cache, tmp_path):
    """A copy of the tiny cache that each case damages."""
    return Path(shutil.copytree(tiny_cache, tmp_path / "cache"))


def _train(cache, run_dir, config=CONFIGS / "cpu_baseline.toml", *extra):
    return _run("training.train", "--config", str(config), *_overrides(cache, run_dir, *extra))


def test_bad_configs_are_named_with_their_problem(tiny_cache, tmp_path):
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[train\nepochs = 2\n")
    result = _train(tiny_cache, tmp_path / "run", bad_toml)
    _assert_one_line(result, "training.train", bad_toml, "not a valid TOML config")
    result = _train(tiny_cache, tmp_path / "run", CONFIGS / "cpu_baseline.toml", "train.epochs=x")
    _assert_one_line(
        result, "training.train", "override train.epochs=x", "'train.epochs' must be an integer"
    )
    assert not (tmp_path / "run").exists()

    unknown = tmp_path / "unknown.toml"
    unknown.write_text(f"base = '{CONFIGS / 'cpu_base.toml'}'\n[train]\nepoch = 2\n")
    with pytest.raises(EquicamError, match=f"{unknown}: unknown config key 'train.epoch'"):
        load_config(unknown)
    with pytest.raises(EquicamError, match="override model.widths=8: .* must be a list"):
        load_config(CONFIGS / "cpu_base.toml", ["model.widths=8"])


def test_missing_and_corrupt_caches_are_named(broken_cache, tmp_path):
    images = broken_cache / "images.npy"
    whole = images.read_bytes()
    images.write_bytes(whole[:200])
    result = _train(broken_cache, tmp_path / "run")
    _assert_one_line(result, "training.train", images, "corrupt or truncated")
    images.write_bytes(whole)

    labels = broken_cache / "labels.npy"
    np.save(labels, np.zeros(5, np.uint8))
    out = tmp_path / "cal.safetensors"
    result = _run(
        "training.calibrate", "baseline", "--cache", str(broken_cache), "--out", str(out)
    )
    _assert_one_line(result, "training.calibrate", labels, "holds (5,) rows")

    meta = broken_cache / "meta.json"
    meta.write_text('{"modalities": ["t1"')
    segnet = ("--cache", str(broken_cache), "--cam", "baseline", "--out", str(tmp_path / "seg"))
    result = _run("training.train_segnet", *segnet)
    _assert_one_line(result, "training.train_segnet", meta, "corrupt cache metadata")
    # --debug shows where it came from instead
    debug = _run("training.train_segnet", *segnet, "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "EquicamError" in debug.stderr
    assert not (tmp_path / "seg").exists() and not out.exists()
    with pytest.raises(EquicamError, match=f"{tmp_path / 'none' / 'meta.json'}: no slice cache"):
        SliceCache(tmp_path / "none", "train", ["t1"])
