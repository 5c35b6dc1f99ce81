"""What every kind of hostile input shares: the run to make, a tiny case and checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import write_case

SHAPE = (12, 10, 8)


@dataclass
class Run:
    """One command to run: its arguments, the expected error phrase (None: must succeed),
    the file or folder the error must name, and commands to run first (must succeed)."""

    argv: list[str]
    phrase: str | None
    names: Path | None = None
    before: list[list[str]] = field(default_factory=list)


def tiny_checkpoint(path: Path, meta: dict | None = None, tensors: dict | None = None) -> Path:
    """A small real checkpoint; ``meta`` replaces the ``equicam`` metadata, ``tensors`` the
    weights (written with safetensors directly, as a hostile file would be)."""
    import torch
    from safetensors.torch import save_file

    from equicam.core.checkpoint import save_checkpoint
    from equicam.core.model import ModelConfig, MultiModalCAM

    torch.manual_seed(0)
    model = MultiModalCAM(ModelConfig(widths=(4, 8, 8, 8), input_size=32))
    save_checkpoint(path, model, {"threshold": 0.4})
    if meta is None and tensors is None:
        return path
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        good_meta = json.loads(handle.metadata()["equicam"])
        good = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    path.unlink()
    raw = meta if isinstance(meta, str) else json.dumps({**good_meta, **(meta or {})})
    save_file(tensors if tensors is not None else good, str(path), metadata={"equicam": raw})
    return path


def write_test_case(root: Path) -> Path:
    """A tiny BraTS 2021 case, BraTS2021_00001, under ``root``."""
    return write_case(root / "BraTS2021_00001", case_id="BraTS2021_00001")


def flair_of(case: Path) -> Path:
    """The case's FLAIR file."""
    return case / "BraTS2021_00001_flair.nii.gz"


def cam_argv(
    root: Path, case: Path | str, checkpoint: Path | None = None, *extra: str
) -> list[str]:
    """`equicam cam` of ``case`` into ``root/out`` on the CPU (a tiny checkpoint by default)."""
    checkpoint = checkpoint or tiny_checkpoint(root / "tiny.safetensors")
    return ["cam", str(case), "--checkpoint", str(checkpoint), "--out", str(root / "out"),
            "--device", "cpu", *extra]  # fmt: skip
