"""Driving a run: a checkpoint damaged after it was marked complete does not crash resume; it
falls back to the previous complete checkpoint, saying so, or fails cleanly when none is left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import base_spec

from tunesmith import api
from tunesmith.cli import main
from tunesmith.events import Event
from tunesmith.runs import RunDir


def _interrupted_run(tiny_model_dir: Path, chat_file: Path, run: Path) -> list[dict]:
    """A run with complete checkpoints at steps 2 and 4 that reads as if it died before
    writing final/. Returns its metrics as trained uninterrupted."""
    api.train(base_spec(tiny_model_dir, chat_file, run, max_steps=4, save_every_steps=2))
    metrics = RunDir(run).read_metrics()
    import shutil

    shutil.rmtree(run / "final")
    RunDir(run).set_status("failed", error="killed")
    return metrics


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 3])


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(
    tiny_model_dir, chat_file, tmp_path
):
    run = tmp_path / "run"
    uninterrupted = _interrupted_run(tiny_model_dir, chat_file, run)
    _truncate(run / "checkpoints" / "step-4" / "trainable.safetensors")
    seen: list[Event] = []
    result = api.resume(run, on_event=seen.append)
    assert result.status == "completed"
    warned = [e.message for e in seen if e.kind == "message" and e.level == "warning"]
    assert any("step-4 is damaged" in m and "trying the one before it" in m for m in warned)
    said = [e.message for e in seen if e.kind == "message"]
    assert any("resumed from" in m and "step-2 (step 2)" in m for m in said)
    # resumed from step 2, the run replays steps 3-4 exactly as the uninterrupted run did
    assert [(m["step"], m["loss"]) for m in result.metrics] == [
        (m["step"], m["loss"]) for m in uninterrupted
    ]


def test_no_usable_checkpoint_is_a_clean_error(tiny_model_dir, chat_file, tmp_path, capsys):
    run = tmp_path / "run"
    _interrupted_run(tiny_model_dir, chat_file, run)
    _truncate(run / "checkpoints" / "step-4" / "trainable.safetensors")
    (run / "checkpoints" / "step-2" / "trainer_state.json").write_text('{"step": 2, "epo')
    with pytest.raises(SystemExit) as exc:
        main(["train", "--resume", str(run), "--no-progress"])
    out = capsys.readouterr()
    printed = out.out + out.err
    assert exc.value.code == 2, printed
    assert "no checkpoint of" in printed and "step-4" in printed and "step-2" in printed
    assert "Traceback" not in printed
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "no checkpoint" in manifest["error"]
    # the damaged checkpoints are left as they were, for the user to look at
    assert (run / "checkpoints" / "step-2" / "COMPLETE").is_file()
