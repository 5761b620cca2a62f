"""Fixtures for export tests: adapter runs on the tiny model, built once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from export_helpers import make_run


@pytest.fixture(scope="session")
def lora_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tiny_model_dir, tmp_path_factory.mktemp("lora-run"))


@pytest.fixture(scope="session")
def dora_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tiny_model_dir, tmp_path_factory.mktemp("dora-run"), dora=True, seed=2)
