"""Every hostile input and fault of tests/hostile/ through `equicam`: one clear line, exit 2
(or success where the input is fine), no traceback, every file the user had intact, no
temporary left behind."""

import warnings

import pytest

from tests.hostile import KINDS, run_kind


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_input(kind, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = run_kind(kind, tmp_path)
    assert not outcome.traceback, outcome.stderr
    assert outcome.clear, (outcome.status, outcome.stderr, outcome.run.phrase)
    assert outcome.lost == [], "files changed or lost"
    assert outcome.litter == []
