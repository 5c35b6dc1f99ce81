"""Atomic file writes: write a temporary file in the target folder, then rename it."""

from __future__ import annotations

import os
from pathlib import Path


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give a finished temporary file the permissions of a normal new file, then move it
    over ``path`` in one step (``mkstemp`` creates files readable by their owner only)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, Path(path))
