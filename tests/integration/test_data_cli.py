"""`tunesmith data ...` end to end through the CLI entry point (tiny model, no network)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cli_run import run_cli as run


def rows(n: int) -> list[dict]:
    topics = ["refund", "delivery", "password", "invoice", "account", "phone", "email"]
    return [
        {
            "messages": [
                {"role": "user", "content": f"Question {i} about my {topics[i % 7]}?"},
                {
                    "role": "assistant",
                    "content": f"Here is the answer {i} about your {topics[i % 7]}.",
                },
            ]
        }
        for i in range(n)
    ]


def write(path: Path, items: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items))
    return path


def test_validate_broken_line_7_exits_2_naming_line_7(tmp_path, tiny_model_dir, capsys):
    items: list = rows(20)
    items[6] = '{"messages": [{"role": "user", "content": "hi"}'  # truncated JSON on line 7
    path = write(tmp_path / "train.jsonl", items)
    code, out, _ = run(["data", "validate", str(path), "--model", str(tiny_model_dir)], capsys)
    assert code == 2
    assert f"{path}:7" in out and "invalid JSON" in out
    assert "20 rows read, 19 ok, 1 rejected" in out


def test_validate_good_file_exits_0_with_summary(tmp_path, tiny_model_dir, capsys):
    path = write(tmp_path / "train.jsonl", rows(20))
    code, out, _ = run(["data", "validate", str(path), "--model", str(tiny_model_dir)], capsys)
    assert code == 0, out
    assert "20 examples" in out and "trained" in out and "p95" in out
    assert "auto hyperparameters" in out and "estimated training time" in out
    assert "the data is usable" in out


def test_validate_json_report(tmp_path, tiny_model_dir, capsys):
    items: list = rows(20)
    items[3] = {"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}
    val = write(tmp_path / "val.jsonl", [rows(30)[25], rows(20)[1]])
    path = write(tmp_path / "train.jsonl", items)
    code, out, _ = run(
        [
            "data",
            "validate",
            str(path),
            "--model",
            str(tiny_model_dir),
            "--json",
            "--val",
            str(val),
            "--max-seq-len",
            "512",
        ],
        capsys,
    )
    assert code == 2
    report = json.loads(out)
    assert report["ok"] is False and report["rows_read"] == 22
    assert [(e["code"], e["line"]) for e in report["errors"]] == [
        ("unknown_role", 4),
        ("overlap", 2),
    ]
    assert report["settings"]["max_seq_len"] == 512
    assert report["stats"]["tokens"]["trained"]["max"] > 0


def test_validate_shows_at_most_50_errors_with_a_count(tmp_path, tiny_model_dir, capsys):
    items: list = ["{bad"] * 60 + rows(12)
    path = write(tmp_path / "train.jsonl", items)
    code, out, _ = run(["data", "validate", str(path), "--no-tokens"], capsys)
    assert code == 2
    assert "60 errors" in out and "and 10 more errors" in out
    assert f"{path}:50" in out and f"{path}:51:" not in out


def test_missing_file_is_one_line_exit_2(tmp_path, capsys):
    code, _, err = run(["data", "validate", str(tmp_path / "nope.jsonl"), "--no-tokens"], capsys)
    assert code == 2 and "does not exist" in err and "Traceback" not in err


def test_preview_marks_trained_tokens(tmp_path, tiny_model_dir, capsys):
    path = write(tmp_path / "train.jsonl", rows(5))
    code, out, _ = run(
        ["data", "preview", str(path), "--model", str(tiny_model_dir), "--n", "2"], capsys
    )
    assert code == 0
    assert "legend" in out and out.count("tokens,") == 2
    assert "⟦Here is the answer 0 about your refund.<|im_end|>⟧" in out
    assert "⟦Question" not in out


def test_convert_and_split(tmp_path, capsys):
    src = write(
        tmp_path / "alpaca.jsonl",
        [{"instruction": f"Task {i}", "output": f"Done {i}"} for i in range(20)],
    )
    out_path = tmp_path / "chat.jsonl"
    code, out, _ = run(["data", "convert", str(src), str(out_path), "--to", "chat"], capsys)
    assert code == 0 and "wrote 20 rows" in out
    assert json.loads(out_path.read_text().splitlines()[0])["messages"][0]["content"] == "Task 0"
    code, out, _ = run(["data", "split", str(out_path), "--val", "0.1", "--seed", "3"], capsys)
    assert code == 0
    train, val = tmp_path / "chat.train.jsonl", tmp_path / "chat.val.jsonl"
    assert len(val.read_text().splitlines()) == 2 and len(train.read_text().splitlines()) == 18
    code, _, err = run(["data", "convert", str(src), str(tmp_path / "x.csv")], capsys)
    assert code == 2 and "JSONL" in err


def test_validate_shows_progress_for_big_files_only_and_never_with_json(
    tmp_path, capsys, monkeypatch
):
    from tunesmith.cli import data_cmds

    path = write(tmp_path / "train.jsonl", rows(30))
    argv = ["data", "validate", str(path), "--no-tokens"]
    code, _, err = run(argv, capsys)
    assert code == 0 and "checking" not in err
    monkeypatch.setattr(data_cmds, "PROGRESS_MIN_BYTES", 1)  # now the file counts as big
    code, out, err = run(argv, capsys)
    assert code == 0 and "the data is usable" in out
    assert "checking train.jsonl: 100%" in err  # not a terminal: a plain line, in percent
    code, out, err = run([*argv, "--json"], capsys)
    assert code == 0 and json.loads(out)["ok"] and "checking" not in err


@pytest.mark.slow
def test_validate_with_the_default_model(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", rows(20))
    code, out, _ = run(["data", "validate", str(path)], capsys)
    assert code == 0 and re.search(r"134\.5M\s+parameters", out)
