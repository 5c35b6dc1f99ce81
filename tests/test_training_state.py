"""The training state: written safely with the transforms' random state, refused by name when
it is not a state this module wrote (a pickle with code, an empty or truncated file)."""

import pytest
import torch

from tests.test_training import CONFIGS, _overrides
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
