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


def _fake_checkpoints(root: Path, steps: list[int], val_losses: dict[int, float]) -> RunDir:
    import json

    run = RunDir(root / "run")
    run.path.mkdir(parents=True)
    run.write_manifest({"kind": "tunesmith-run", "status": "cancelled"})
    for s in steps:
        run.checkpoint(s).mkdir(parents=True)
        (run.checkpoint(s) / "COMPLETE").write_text("{}")
    run.checkpoint(9).mkdir()  # no marker: not complete, never named
    run.metrics.write_text(
        "".join(json.dumps({"step": s, "val_loss": v}) + "\n" for s, v in val_losses.items())
    )
    return run


def test_checkpoint_references_resolve_to_complete_checkpoints(tmp_path: Path) -> None:
    """Issue 11 item 16: one clean function from a reference to a checkpoint (the server's
    ckpt-step-N included); anything else is a one-line error listing what there is."""
    from tunesmith.errors import ModelError
    from tunesmith.runs import checkpoint_ref

    run = _fake_checkpoints(tmp_path, [2, 4, 6], {2: 1.5, 4: 0.9, 6: 1.1, 9: 0.1})
    for ref, step in (("step-4", 4), ("4", 4), ("ckpt-step-6", 6), ("latest", 6), ("best", 4)):
        assert run.resolve_checkpoint(ref) == (step, run.checkpoint(step)), ref
    run.update_manifest(best_step=2)  # a finished run's recorded best wins while it is kept
    assert run.resolve_checkpoint("best")[0] == 2
    for ref in ("step-9", "step-3", "soon", ""):
        with pytest.raises(ModelError) as info:
            run.resolve_checkpoint(ref)
        assert "step-2, step-4, step-6" in (info.value.hint or "")
    found = checkpoint_ref(f"{run.path}@best")
    assert found is not None and found[0].path == run.path and found[1] == "best"
    found = checkpoint_ref(run.checkpoint(4))
    assert found is not None and found[0].path == run.path and found[1] == "step-4"
    assert checkpoint_ref(run.checkpoint(4) / "COMPLETE") is None
    odd = tmp_path / "a@b"  # an existing path with an '@' is a path, not a reference
    odd.mkdir()
    assert checkpoint_ref(odd) is None
    assert checkpoint_ref(tmp_path / "not-a-run@step-2") is None


def test_best_needs_a_validation_loss(tmp_path: Path) -> None:
    from tunesmith.errors import ModelError

    run = _fake_checkpoints(tmp_path, [2], {})
    with pytest.raises(ModelError, match="validation loss"):
        run.resolve_checkpoint("best")


def test_each_evaluation_gets_a_new_folder(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    first = run.new_eval_dir("data/other set.jsonl")
    assert first.parent == run.evals and first.name.startswith("other-set-")
    first.mkdir(parents=True)
    second = run.new_eval_dir("data/other set.jsonl")
    assert second != first and not second.exists()
