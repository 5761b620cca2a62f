"""tunesmith.runs: RunDir is the one place a run's layout is known."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tunesmith.errors import ConfigError
from tunesmith.runs import RunDir, run_of

SRC = Path(__file__).resolve().parents[2] / "src" / "tunesmith"


def test_manifest_status_and_cancel(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    assert not RunDir.is_run(run.path) and run.manifest() == {}
    with pytest.raises(ConfigError, match="does not exist"):
        RunDir.open(run.path)
    run.path.mkdir()
    with pytest.raises(ConfigError, match="not a tunesmith run"):
        RunDir.open(run.path)
    run.write_manifest({"status": "running", "base_model": "m"})
    assert RunDir.open(run.path).status == "running"
    run.set_status("failed", error="boom")
    m = run.manifest()
    assert m["status"] == "failed" and m["error"] == "boom" and m["finished"]
    with pytest.raises(ValueError):
        run.set_status("exploded")
    assert not run.cancel_requested()
    run.request_cancel()
    assert run.cancel_requested()
    run.clear_cancel()
    assert not run.cancel_requested()
    found, again = run_of(run.final), run_of(run.path)
    assert found is not None and again is not None
    assert found.path == again.path == run.path
    assert run_of(tmp_path) is None


def test_checkpoints_complete_and_incomplete(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for step in (3, 10, 7):
        run.checkpoint(step).mkdir(parents=True)
        (run.checkpoint(step) / "COMPLETE").write_text("{}")
    run.checkpoint(12).mkdir()  # killed before its marker
    (run.checkpoints / ".tmp-step-13-99").mkdir()
    assert [s for s, _ in run.complete_checkpoints()] == [3, 7, 10]
    assert run.latest_checkpoint() == run.checkpoint(10)
    assert {p.name for p in run.incomplete_checkpoints()} == {"step-12", ".tmp-step-13-99"}


def test_metrics_are_cut_back_to_a_step(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.metrics.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step"')
    run.truncate_metrics(2)
    assert [m["step"] for m in run.read_metrics()] == [1, 2]


def test_only_runs_py_spells_the_layout() -> None:
    """The Acceptance grep of the house issue, as a test."""
    out = subprocess.run(
        ["grep", "-rln", '"manifest.json"\\|"final"\\|"metrics.jsonl"\\|"events.jsonl"', str(SRC)],
        capture_output=True,
        text=True,
        check=False,
    )
    files = sorted(Path(p).relative_to(SRC).as_posix() for p in out.stdout.split())
    assert files == ["runs.py"], files
