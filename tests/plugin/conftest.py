"""Fixtures of the plugin tests: a tiny checkpoint and a folder of cases."""

import shutil
from pathlib import Path

import pytest
import torch

from equicam.core.checkpoint import save_checkpoint
from equicam.core.model import ModelConfig, MultiModalCAM
from equicam.core.synth import write_case


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A small random model that answers in well under a second per slice."""
    torch.manual_seed(0)
    model = MultiModalCAM(ModelConfig(widths=(4, 8, 8, 8), input_size=32))
    with torch.no_grad():  # lean towards "tumour" so that maps are not all gated away
        for net in model.nets.values():
            net.head.weight[1] += 0.3
    return save_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model, {"threshold": 0.5}
    )


@pytest.fixture(scope="session")
def three_cases(tmp_path_factory):
    """Three small synthetic cases (indices 0, 1, 2 of seed 3), written once."""
    folder = tmp_path_factory.mktemp("three") / "cases"
    for index in range(3):
        write_case(folder, seed=3, index=index, size="small")
    return folder


@pytest.fixture
def case_folder(tmp_path, three_cases):
    """A fresh copy of :func:`three_cases` for a test that saves masks into it."""
    return Path(shutil.copytree(three_cases, tmp_path / "cases"))


@pytest.fixture(autouse=True)
def own_napari_settings(tmp_path, monkeypatch):
    """napari's settings (the reader preferences equicam adds) in ``tmp_path``, never the
    user's."""
    from napari import settings

    fresh = settings.NapariSettings(config_path=tmp_path / "napari-settings.yaml")
    fresh._connect_events()
    monkeypatch.setattr(settings, "_SETTINGS", fresh)
    return fresh
