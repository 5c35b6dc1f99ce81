"""The training state: written safely with the transforms' random state, refused by name when
it is not a state this module wrote (a pickle with code, an empty or truncated file)."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.test_training import CONFIGS, ROOT, _overrides
from training.train import load_config, train


def _run(cache, run_dir, *extra):
    config = load_config(CONFIGS / "cpu_baseline.toml", _overrides(cache, run_dir, *extra))
    return train(config)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_the_state_holds_the_random_state_and_bad_state_files_are_refused(
    tiny_cache, tmp_path, capsys
):
    _run(tiny_cache, tmp_path, "train.epochs=1")
    state_path = tmp_path / "last_state.pt"
    state = torch.load(state_path, weights_only=True)
    assert state["generator"].dtype == torch.uint8 and state["torch_rng"].dtype == torch.uint8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    good = state_path.read_bytes()
    damages = {
        "pickle": lambda: torch.save({"payload": _Payload()}, state_path),
        "empty": lambda: state_path.write_bytes(b""),
        "truncated": lambda: state_path.write_bytes(good[:1000]),
    }
    for damage in damages.values():
        damage()
        with pytest.raises(ValueError, match=r"last_state\.pt: cannot resume, not a training"):
            _run(tiny_cache, tmp_path, "train.epochs=2", "train.resume=true")
    assert "code ran" not in capsys.readouterr().out


def test_a_run_killed_during_an_epoch_resumes_to_what_an_uninterrupted_run_ends_with(
    tiny_cache, tmp_path
):
    extra = ("train.epochs=2", "train.epoch_slices=160", "train.log_every=1", "train.threads=1")
    threads = torch.get_num_threads()
    try:
        reference = _run(tiny_cache, tmp_path / "whole", *extra)
        killed = tmp_path / "killed"
        command = [
            sys.executable,
            "-m",
            "training.train",
            "--config",
            str(CONFIGS / "cpu_baseline.toml"),
            *_overrides(tiny_cache, killed, *extra),
        ]
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
        with subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        ) as run:
            for line in run.stdout:
                if line.startswith("epoch 2 step 5/"):
                    run.send_signal(signal.SIGKILL)
                    break
            assert run.wait(timeout=300) == -signal.SIGKILL
        assert len((killed / "metrics.jsonl").read_text().splitlines()) == 1
        assert not (killed / "checkpoint.safetensors").exists()
        resumed = _run(tiny_cache, killed, *extra, "train.resume=true")
    finally:
        torch.set_num_threads(threads)
    whole, again = load_file(reference), load_file(resumed)
    assert whole.keys() == again.keys()
    for key in whole:
        torch.testing.assert_close(again[key], whole[key], rtol=0, atol=0)

    def rows(run_dir):
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]

    assert rows(killed) == rows(tmp_path / "whole") and len(rows(killed)) == 2
