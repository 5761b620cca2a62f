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


GRADER = {
    "type": "string_check",
    "name": "label",
    "input": "{{sample.output_json.category}}",
    "reference": "{{item.label}}",
    "operation": "eq",
}


def test_dpo_and_reinforcement_jobs_map_onto_the_run_spec(tmp_path: Path) -> None:
    from tunesmith.config import load_spec
    from tunesmith.worker import group_size

    settings = ServerSettings(home=tmp_path, models={"tiny": "/models/tiny"})
    auto = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
    dpo = _job(method={"type": "dpo"}, hyperparameters={**auto, "beta": 0.3, "n_epochs": 2})
    spec = job_spec(dpo, settings, {"training_file": "/f/p.jsonl"})
    assert spec["method"] == {"type": "dpo", "dpo": {"beta": 0.3}} and spec["epochs"] == 2
    assert load_spec(spec).method.dpo.beta == 0.3
    spec = job_spec(
        replace(dpo, hyperparameters={**auto, "beta": "auto"}), settings, {"training_file": "/f"}
    )
    assert spec["method"] == {"type": "dpo"} and load_spec(spec).method.dpo.beta == 0.1

    rl_hyper = {
        **auto,
        "compute_multiplier": 2.0,
        "eval_interval": 5,
        "eval_samples": 3,
        "reasoning_effort": "high",
    }
    rl = _job(
        method={"type": "reinforcement", "reinforcement": {"grader": GRADER}},
        hyperparameters=rl_hyper,
    )
    spec = job_spec(rl, settings, {"training_file": "/f/r.jsonl"})
    assert spec["method"] == {
        "type": "reinforcement",
        "reinforcement": {"grader": GRADER, "samples_per_prompt": 8, "eval_samples": 3},
    }
    assert spec["eval"]["every_steps"] == 5
    loaded = load_spec(spec)
    assert loaded.method.reinforcement.samples_per_prompt == 8 and loaded.eval.every_steps == 5
    allowed = ServerSettings(home=tmp_path, models={"tiny": "/m"}, allow_python_graders=True)
    spec = job_spec(rl, allowed, {"training_file": "/f/r.jsonl"})
    assert spec["method"]["reinforcement"]["allow_python"] is True  # the operator's word only
    # compute_multiplier scales the group of completions per prompt, within K's bounds
    assert [group_size(x) for x in ("auto", None, 1, 0.5, 0.1, 1.4, 100)] == [4, 4, 4, 2, 2, 6, 64]


def test_the_job_shows_what_the_run_resolved() -> None:
    from tunesmith.worker import resolved_hyperparameters

    hyper = {
        "n_epochs": "auto",
        "batch_size": "auto",
        "learning_rate_multiplier": 2.0,
        "beta": "auto",
    }
    config = {
        "epochs": 3,
        "batch_size": 2,
        "grad_accum": 4,
        "world_size": 1,
        "lr_multiplier": 2.0,
        "method": {"type": "dpo", "dpo": {"beta": 0.1}},
        "eval_every_steps": 10,
    }
    got = resolved_hyperparameters(_job(method={"type": "dpo"}, hyperparameters=hyper), config)
    assert got == {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 2.0, "beta": 0.1}
    rl = {
        "n_epochs": 1,
        "compute_multiplier": "auto",
        "eval_interval": "auto",
        "eval_samples": "auto",
        "reasoning_effort": "default",
    }
    config["method"] = {
        "type": "reinforcement",
        "reinforcement": {"samples_per_prompt": 4, "eval_samples": 1},
    }
    got = resolved_hyperparameters(_job(hyperparameters=rl), config)
    assert got == {**rl, "compute_multiplier": 1.0, "eval_interval": 10, "eval_samples": 1}


def test_an_objectives_statistics_keep_openai_style_names(tmp_path: Path) -> None:
    ours = {
        "step": 2,
        "loss": 0.6,
        "reward_margin": 0.2,
        "preference_accuracy": 0.5,
        "val_loss": 0.7,
        "val_preference_accuracy": 0.75,
        "elapsed_s": 1.0,
        "lr": 0.1,
    }
    assert metrics_event(ours, 4) == {
        "step": 2,
        "total_steps": 4,
        "train_loss": 0.6,
        "train_reward_margin": 0.2,
        "train_preference_accuracy": 0.5,
        "valid_loss": 0.7,
        "valid_preference_accuracy": 0.75,
        "lr": 0.1,
    }
    run = RunDir(tmp_path)
    first = {"step": 1, "loss": 0.69, "reward_margin": 0.0, "preference_accuracy": 0.0}
    run.metrics.write_text(json.dumps(first) + "\n" + json.dumps(ours) + "\n")
    assert results_csv(run, "dpo").splitlines() == [
        "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,"
        "train_reward_margin,train_preference_accuracy,valid_preference_accuracy",
        "1,0.69,,,,0.0,0.0,",
        "2,0.6,,0.7,,0.2,0.5,0.75",
    ]
    assert results_csv(run).splitlines()[0].count(",") == 4  # supervised: OpenAI's columns


def test_a_refused_spec_fails_the_job_with_the_cli_s_message(tmp_path: Path) -> None:
    from tunesmith.worker import user_error

    log = tmp_path / "worker.log"
    assert user_error(log) is None  # no output at all
    log.write_text("loading...\nerror: old attempt\nmore output\n" + "x" * 70000 + "\n")
    assert user_error(log) is None  # only the tail is read; no error line there
    log.write_text("loading...\nerror: method.reinforcement.grader.model: no judges\n")
    assert user_error(log) == "method.reinforcement.grader.model: no judges"
    log.write_text("Traceback (most recent call last):\n  File x\nValueError: boom\n")
    assert user_error(log) is None  # never a traceback
