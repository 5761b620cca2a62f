"""Fixtures for training tests (the data helpers live in tests/integration/train_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))

from train_helpers import write_chat


@pytest.fixture
def chat_file(tmp_path: Path) -> Path:
    return write_chat(tmp_path / "train.jsonl", 48)


@pytest.fixture
def val_file(tmp_path: Path) -> Path:
    return write_chat(tmp_path / "val.jsonl", 12, seed=1)
