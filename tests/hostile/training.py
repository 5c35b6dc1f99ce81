"""Hostile training states: what ``python -m training.train ... train.resume=true`` finds in
the run folder (a pickle with code, what an in-place save killed midway left)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import write_tiny_cache
from tests.hostile.common import ROOT, Payload, Run


def _resume_from(write_state: Callable[[Path], None]) -> Callable[[Path], Run]:
    def build(root: Path) -> Run:
        cache = write_tiny_cache(root / "cache")
        state = root / "run" / "last_state.pt"
        state.parent.mkdir()
        write_state(state)
        argv = [
            "--config",
            str(ROOT / "training" / "configs" / "cpu_baseline.toml"),
            f"data.cache='{cache}'",
            f"train.run_dir='{state.parent}'",
            "train.resume=true",
        ]
        return Run(argv, "cannot resume, not a training state", state, module="training.train")

    return build


def _pickle(path: Path) -> None:
    import torch

    torch.save({"payload": Payload()}, path)


TRAINING_KINDS = {
    "resume from a pickle last_state.pt": _resume_from(_pickle),
    "resume from a 0-byte last_state.pt": _resume_from(lambda p: p.write_bytes(b"")),
    "resume from a truncated last_state.pt": _resume_from(
        lambda p: (_pickle(p), p.write_bytes(p.read_bytes()[:100]))
    ),
}
