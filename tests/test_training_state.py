"""The training state: written safely, and a resumed run draws what an unbroken one would."""

import pytest
import torch
from safetensors.torch import load_file

from tests.test_training import CONFIGS, _overrides
from training.train import load_config, train


def _run(cache, run_dir, *extra):
    config = load_config(CONFIGS / "cpu_baseline.toml", _overrides(cache, run_dir, *extra))
    return train(config)


def test_a_resumed_run_ends_where_an_unbroken_one_does(tiny_cache, tmp_path):
    unbroken = load_file(str(_run(tiny_cache, tmp_path / "a", "train.epochs=2")))
    _run(tiny_cache, tmp_path / "b", "train.epochs=1")
    state = torch.load(tmp_path / "b" / "last_state.pt", weights_only=True)
    assert {"generator", "torch_rng"} <= set(state)
    resumed = load_file(
        str(_run(tiny_cache, tmp_path / "b", "train.epochs=2", "train.resume=true"))
    )
    assert unbroken.keys() == resumed.keys()
    for key, value in unbroken.items():
        torch.testing.assert_close(resumed[key], value, msg=key)
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".")]


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize("content", ["pickle", "empty", "truncated"])
def test_a_bad_state_file_is_refused_with_its_name(tiny_cache, tmp_path, content, capsys):
    _run(tiny_cache, tmp_path, "train.epochs=1")
    state_path = tmp_path / "last_state.pt"
    if content == "pickle":
        torch.save({"payload": _Payload()}, state_path)
    elif content == "empty":
        state_path.write_bytes(b"")
    else:
        state_path.write_bytes(state_path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"last_state\.pt: cannot resume, not a training state"):
        _run(tiny_cache, tmp_path, "train.epochs=2", "train.resume=true")
    assert "code ran" not in capsys.readouterr().out
