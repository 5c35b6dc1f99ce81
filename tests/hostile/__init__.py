"""A catalogue of hostile inputs and faults for the command line, each built for real on disk.

Each kind builds its files under a fresh folder and returns the ``equicam`` arguments to run,
what the one-line error must say (or None when the run must succeed) and the file it must
name. ``tests/test_hostile.py`` asserts each; ``bench/hostile_inputs.py`` counts them.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import stat
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from equicam.core.atomic import TEMP_SUFFIX
from tests.hostile.checkpoints import CHECKPOINT_KINDS
from tests.hostile.common import Run, tiny_checkpoint
from tests.hostile.faults import FAULT_KINDS
from tests.hostile.outputs import OUTPUT_KINDS
from tests.hostile.plugin import PLUGIN_KINDS
from tests.hostile.scans import PATH_KINDS, SCAN_KINDS, seg_kinds
from tests.hostile.training import TRAINING_KINDS

__all__ = ["KINDS", "Outcome", "run_kind", "tiny_checkpoint"]

KINDS: dict[str, Callable[[Path], Run]] = {
    **SCAN_KINDS,
    **seg_kinds(),
    **PATH_KINDS,
    **CHECKPOINT_KINDS,
    **OUTPUT_KINDS,
    **FAULT_KINDS,
    **TRAINING_KINDS,
    **PLUGIN_KINDS,
}


@dataclass
class Outcome:
    """What one kind did: exit status, stderr, files changed or lost, temporaries left."""

    run: Run
    status: int
    stderr: str
    lost: list[str]
    litter: list[str]

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.stderr or self.status not in (0, 2)

    @property
    def clear(self) -> bool:
        """The expected outcome: success, or one error line with the phrase and the file."""
        errors = [line for line in self.stderr.splitlines() if ": error: " in line]
        if self.run.phrase is None:
            return self.status == 0 and not errors
        named = self.run.names is None or str(self.run.names) in self.stderr
        return (
            self.status == 2
            and len(errors) == 1
            and re.search(self.run.phrase, errors[0]) is not None
            and named
        )


def _snapshot(root: Path) -> dict[str, bytes]:
    """The user's files under ``root`` (not what lies in a killed run's temporaries)."""
    return {
        str(p): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
        and not p.is_symlink()
        and stat.S_ISREG(p.stat().st_mode)
        and not any(part.endswith(TEMP_SUFFIX) for part in p.relative_to(root).parts)
    }


def _entry(run: Run) -> Callable[[list[str]], int]:
    """``equicam``'s ``main``, or a ``python -m`` module's as :func:`~equicam.cli.run_module`
    runs it, or the kind's plugin call (errors told in one line, exit 2)."""
    from equicam.cli import main, report_errors

    if run.call is not None:
        return lambda argv: report_errors("napari-equicam", False, run.call)
    if run.module is None:
        return main
    module = importlib.import_module(run.module)
    return lambda argv: report_errors(run.module, False, lambda: module.main(argv))


def run_kind(name: str, root: Path) -> Outcome:
    """Build kind ``name`` under ``root``, run it through ``equicam``'s entry point (or the
    kind's module) and report what happened (stderr captured; the exit status of ``main``)."""
    run = KINDS[name](root)
    main = _entry(run)
    for argv in run.before:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            if main(argv) != 0:
                raise RuntimeError(f"{name}: the run before failed: {argv}")
    before = _snapshot(root)
    stderr = io.StringIO()
    try:
        with (
            run.during() if run.during else contextlib.nullcontext(),
            contextlib.redirect_stderr(stderr),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            status = main(run.argv)
    except SystemExit as exit_:  # argparse's own refusal of a flag: usage and one line
        status = exit_.code
    except BaseException:  # noqa: BLE001 - an escaped exception is what is being counted
        status, text = -1, "Traceback (escaped main)\n" + traceback.format_exc()
        stderr.write(text)
    after = _snapshot(root)
    lost = sorted(p for p, data in before.items() if after.get(p) != data)
    lost += [f"{p} (not made)" for p in run.made if not p.exists()]
    litter = sorted(str(p) for p in root.rglob(f"*{TEMP_SUFFIX}"))
    litter += [str(p) for p in run.not_made if p.exists()]
    return Outcome(run, status, stderr.getvalue(), lost, litter)
