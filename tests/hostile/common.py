"""What every kind of hostile input shares: the run to make, a tiny case and checkpoint, and
the faults (a SIGKILL mid-save, a full disk, a second run at once)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import write_case

SHAPE = (12, 10, 8)


@dataclass
class Run:
    """One command to run: its arguments, the expected error phrase (None: must succeed),
    the file or folder the error must name, and commands to run first (must succeed).

    ``module`` runs a ``python -m`` entry point (``training.train``) instead of ``equicam``;
    ``call`` runs a plugin function instead (its error told as the CLI tells one); ``during``
    is in force during the run only (a fault); ``made`` must exist afterwards (work of the
    user or of another run), ``not_made`` must not (a folder made for a refused run).
    """

    argv: list[str]
    phrase: str | None
    names: Path | None = None
    before: list[list[str]] = field(default_factory=list)
    module: str | None = None
    call: Callable[[], object] | None = None
    during: Callable[[], AbstractContextManager] | None = None
    made: list[Path] = field(default_factory=list)
    not_made: list[Path] = field(default_factory=list)


ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}

# A child that starts a safe write, says "half" once half the bytes are out, then hangs.
SLOW_WRITER = """
import sys, time
from equicam.core.atomic import write_file, folder_in_place

def slow(handle):
    handle.write(b"new" * 100_000)
    handle.flush()
    print("half", flush=True)
    time.sleep(60)

if sys.argv[1] == "file":
    write_file(sys.argv[2], slow, replace=True)
else:
    with folder_in_place(sys.argv[2]) as work:
        (work / "images.npy").write_bytes(b"x" * 1000)
        print("half", flush=True)
        time.sleep(60)
"""


def kill_mid_save(kind: str, target: Path) -> None:
    """Start a safe write of ``target`` (``file`` or ``folder``) in a child process and
    SIGKILL it half-way, as a killed run would be."""
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, kind, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert child.stdout.readline().strip() == "half"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    assert child.returncode == -signal.SIGKILL


def disk_full_past(limit: int) -> Callable[[], AbstractContextManager]:
    """A fault: no file may grow past ``limit`` bytes (``RLIMIT_FSIZE``), so the kernel fails
    a write past it (EFBIG) as a full disk would (ENOSPC). Python ignores SIGXFSZ."""

    @contextmanager
    def fault() -> Iterator[None]:
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limits[1]))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)

    return fault


def at_once(argv: list[str]) -> Callable[[], AbstractContextManager]:
    """A fault: ``equicam argv`` runs in a second process started with the run; it must
    succeed too."""

    @contextmanager
    def fault() -> Iterator[None]:
        command = [sys.executable, "-m", "equicam.cli", *argv]
        with subprocess.Popen(
            command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        ) as child:
            yield
            _, stderr = child.communicate(timeout=300)
        assert child.returncode == 0, stderr

    return fault


class Payload:
    """Pickled, it runs a shell command when unpickled: nothing may ever unpickle it."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/equicam-pwned",))


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
