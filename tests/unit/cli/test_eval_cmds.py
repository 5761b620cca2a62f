"""`tunesmith eval` never replaces a report silently (issue 11 item 15): an evaluation of a run
on other data gets a folder of its own (RUN/evals/DATA-TIME), the training-time report in
RUN/eval stays; an explicit --output-dir that holds a report is refused without --force."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))
from train_helpers import base_spec, write_chat

from cli_run import run_cli as _run_cli
from tunesmith import api

FAST = ["--metrics", "exact_match", "--max-new-tokens", "2", "--no-forgetting", "--no-progress"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def finished_run(tiny_model_dir, tmp_path, capsys) -> Path:
    train = write_chat(tmp_path / "train.jsonl", 24)
    val = write_chat(tmp_path / "val.jsonl", 6, seed=1)
    spec = base_spec(tiny_model_dir, train, tmp_path / "run", max_steps=2)
    spec["data"]["validation"] = str(val)
    run = api.train(spec).run_dir
    code, _, err = _run_cli(["compare", str(run), *FAST], capsys)  # the run's own report
    assert code == 0, err
    return Path(run)


def test_eval_on_other_data_gets_its_own_folder_and_keeps_the_runs_report(
    finished_run, tmp_path, capsys
):
    eval_dir = finished_run / "eval"
    before = _snapshot(eval_dir)
    other = write_chat(tmp_path / "other.jsonl", 5, seed=7)
    for _ in range(2):
        code, _, err = _run_cli(["eval", str(finished_run), "--data", str(other), *FAST], capsys)
        assert code == 0, err
    assert _snapshot(eval_dir) == before  # the training-time report is untouched
    folders = sorted((finished_run / "evals").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("other-") for f in folders)
    for f in folders:
        assert {p.name for p in f.iterdir()} == {"results.json", "report.md", "report.html"}
    # `compare` on other data: a new folder too; on the run's own held-out data: eval/ again
    code, _, err = _run_cli(["compare", str(finished_run), "--data", str(other), *FAST], capsys)
    assert code == 0, err
    assert len(list((finished_run / "evals").iterdir())) == 3
    assert _snapshot(eval_dir) == before
    own = finished_run.parent / "val.jsonl"
    code, _, err = _run_cli(["compare", str(finished_run), "--data", str(own), *FAST], capsys)
    assert code == 0, err
    assert len(list((finished_run / "evals").iterdir())) == 3  # the same evaluation: eval/


def test_an_output_dir_holding_a_report_needs_force(finished_run, tmp_path, capsys):
    eval_dir = finished_run / "eval"
    before = _snapshot(eval_dir)
    other = write_chat(tmp_path / "other.jsonl", 5, seed=7)
    argv = ["eval", str(finished_run), "--data", str(other), "--output-dir", str(eval_dir), *FAST]
    code, _, err = _run_cli(argv, capsys)
    assert code == 2 and f"{eval_dir} already holds a report" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1
    assert _snapshot(eval_dir) == before and not (finished_run / "evals").exists()
    code, _, err = _run_cli([*argv, "--force"], capsys)
    assert code == 0, err
    assert _snapshot(eval_dir) != before  # replaced, because it was asked for


def test_a_plain_model_gets_a_new_folder_per_evaluation(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    data = write_chat(tmp_path / "held.jsonl", 4, seed=3)
    for _ in range(2):
        code, _, err = _run_cli(["eval", str(tiny_model_dir), "--data", str(data), *FAST], capsys)
        assert code == 0, err
    folders = sorted((tmp_path / "tunesmith-eval").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("held-") for f in folders)
