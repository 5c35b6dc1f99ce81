"""The project's own error class: bad input or a failed save, told in one line."""

from __future__ import annotations

import os
from pathlib import Path


class EquicamError(ValueError):
    """A file, folder or setting that cannot be used; the message names it and the problem.

    Every error that reaches the user because of what they gave (a scan, a checkpoint, an
    output folder, a flag) is one of these or a subclass; the command line prints it as one
    line and exits with status 2.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
