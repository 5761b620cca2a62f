"""tunesmith.worker's pure parts: a job becomes a run spec (operator defaults first, the job's
hyperparameters on top), our metrics become OpenAI's field names, the results CSV."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from tunesmith.runs import RunDir
from tunesmith.service import ServerSettings
from tunesmith.store.records import JobRecord
from tunesmith.worker import fine_tuned_name, job_spec, metrics_event, results_csv


def _job(**kw) -> JobRecord:
    base = dict(
        id="ftjob-1",
        project="p",
        model="tiny",
        training_file="file-a",
        validation_file=None,
        suffix=None,
        seed=5,
        metadata={},
        method={"type": "supervised"},
        hyperparameters={"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5},
        status="running",
        error=None,
        fine_tuned_model=None,
        trained_tokens=None,
        estimated_finish=None,
        created_at=0,
        started_at=None,
        finished_at=None,
        result_files=[],
        run_dir=None,
        lease_owner=None,
        lease_expires_at=None,
        attempts=0,
        cancel_requested=False,
    )
    base.update(kw)
    return JobRecord(**base)


def test_job_spec_layers_operator_defaults_under_the_job(tmp_path: Path) -> None:
    settings = ServerSettings(
        home=tmp_path,
        models={"tiny": "/models/tiny"},
        job_defaults={"data": {"max_seq_len": 128}, "epochs": 9, "save_every_steps": 3},
    )
    spec = job_spec(_job(), settings, {"training_file": "/f/a.jsonl"})
    assert spec["model"] == "/models/tiny" and spec["seed"] == 5
    assert spec["data"] == {"max_seq_len": 128, "train": "/f/a.jsonl"}
    assert spec["epochs"] == 2 and spec["lr_multiplier"] == 0.5 and "batch_size" not in spec
    assert spec["save_every_steps"] == 3 and spec["eval"] == {"compare_base": False}
    assert spec["output_dir"].endswith("jobs/ftjob-1/run")
    assert settings.job_defaults == {
        "data": {"max_seq_len": 128},
        "epochs": 9,
        "save_every_steps": 3,
    }  # not mutated
    with_val = job_spec(
        _job(validation_file="file-b"), settings, {"training_file": "/a", "validation_file": "/b"}
    )
    assert with_val["data"]["validation"] == "/b" and with_val["eval"]["compare_base"] is True
    from tunesmith.config import load_spec

    assert load_spec(spec).epochs == 2  # the spec is a valid run spec


def test_names_metrics_and_results(tmp_path: Path) -> None:
    assert fine_tuned_name(_job()) == "ft:tiny:ftjob-1"
    assert fine_tuned_name(replace(_job(), suffix="x")) == "ft:tiny:x:ftjob-1"
    ours = {
        "step": 3,
        "loss": 1.5,
        "token_accuracy": 0.5,
        "val_loss": 1.7,
        "val_token_accuracy": 0.4,
        "lr": 1e-3,
    }
    assert metrics_event(ours, 10) == {
        "step": 3,
        "total_steps": 10,
        "train_loss": 1.5,
        "train_mean_token_accuracy": 0.5,
        "valid_loss": 1.7,
        "valid_mean_token_accuracy": 0.4,
        "lr": 1e-3,
    }
    run = RunDir(tmp_path)
    run.metrics.write_text(
        json.dumps({"step": 1, "loss": 2.0, "token_accuracy": 0.1}) + "\n" + json.dumps(ours) + "\n"
    )
    assert results_csv(run).splitlines() == [
        "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy",
        "1,2.0,0.1,,",
        "3,1.5,0.5,1.7,0.4",
    ]


def test_a_multi_gpu_job_runs_under_torchrun(tmp_path: Path) -> None:
    from tunesmith.worker import Worker

    settings = ServerSettings(home=tmp_path, models={"tiny": "/m"}, gpus_per_job=4)
    worker = Worker(settings)
    try:
        run = RunDir(tmp_path / "run")
        run.path.mkdir()
        run.write_manifest({"status": "running"})  # a run to resume: no files needed
        cmd = worker._command(_job(), run)
    finally:
        worker.close()
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4"]
    assert cmd[6:] == ["-m", "tunesmith.cli", "train", "--resume", str(run.path), "--no-progress"]
