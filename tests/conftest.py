"""Shared fixtures: synthetic cases written to disk once per test session."""

import pytest

from equicam.core.synth import write_case


@pytest.fixture(scope="session")
def synthetic_cases(tmp_path_factory):
    """Four small synthetic cases (three with tumour, one per type) in the BraTS 2021 layout.

    Case indices 0 (high-grade), 6 (low-grade), 8 (multifocal) and 9 (tumour-free) of seed 7.
    """
    data = tmp_path_factory.mktemp("synthetic")
    for index in (0, 6, 8, 9):
        write_case(data, seed=7, index=index, size="small")
    return data
