"""Fixtures for the evaluation tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sample_comparison import make_comparison


@pytest.fixture
def comparison(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "loss": 2.0 / s, "lr": 1e-3} for s in range(1, 21)]
    rows += [{"step": 10, "val_loss": 0.5}, {"step": 20, "val_loss": 0.3}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    return make_comparison(run)
