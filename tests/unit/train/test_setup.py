"""Setting a run up: what config.yaml records so the run can be read again from anywhere."""

from __future__ import annotations

import yaml
from train_helpers import base_spec, write_chat

from tunesmith import api
from tunesmith.runs import RunDir


def test_a_run_resumes_from_any_working_directory(tiny_model_dir, tmp_path, monkeypatch):
    """Issue 11 item 13: data paths typed relative to one directory are stored absolute (and
    config.yaml says so), so `--resume` (and compare) work from another one."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    write_chat(project / "data" / "train.jsonl", 48)
    write_chat(project / "data" / "val.jsonl", 8, seed=1)
    monkeypatch.chdir(project)
    spec = base_spec(
        tiny_model_dir,
        "data/train.jsonl",
        "runs/r",
        max_steps=6,
        save_every_steps=1,
        early_stopping={"enabled": False},
    )  # all six steps, whatever val says
    spec["data"]["validation"] = "data/val.jsonl"
    run = RunDir(project / "runs" / "r")

    def cancel_at_step_2(event):
        if event.kind == "metrics" and event.step == 2:
            run.request_cancel()

    assert api.train(spec, on_event=cancel_at_step_2).status == "cancelled"
    saved = yaml.safe_load(run.config.read_text())
    assert saved["data"]["train"] == str(project / "data" / "train.jsonl")
    assert saved["data"]["validation"] == str(project / "data" / "val.jsonl")
    assert "data.train, data.validation stored as absolute paths" in saved["auto_notes"]["paths"]
    assert run.manifest()["data"]["train"] == str(project / "data" / "train.jsonl")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    resumed = api.resume(run.path)
    assert resumed.status == "completed"
    assert [m["step"] for m in resumed.metrics] == [1, 2, 3, 4, 5, 6]
    assert list(elsewhere.iterdir()) == []  # nothing written where the user stood


def test_a_dora_run_does_not_claim_the_fused_lora_path(tiny_model_dir, chat_file, tmp_path):
    """Issue 11 item 18: DoRA takes peft's own path, and the log says so."""
    said = []
    for adapter in ("lora", "dora"):
        seen = []
        spec = base_spec(
            tiny_model_dir, chat_file, tmp_path / adapter, adapter=adapter, max_steps=1
        )
        api.train(spec, on_event=seen.append)
        said.append([e.message for e in seen if e.kind == "message" and e.phase == "setup"])
    lora, dora = said
    assert any(m.startswith("LoRA: 14 layers run as one fused autograd function") for m in lora)
    assert not any("fused autograd" in m for m in dora)
    assert "dora: peft's own layers (the fused LoRA path is for plain LoRA)" in dora
