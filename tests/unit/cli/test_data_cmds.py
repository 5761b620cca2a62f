"""`tunesmith data validate` says what `train` will do with a file: which methods can use it,
the same max_seq_len, and duplicates as warnings (issue 11, items 11, 12 and 17)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cli_run import run_cli as run


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"question number {i}"},
            {"role": "assistant", "content": f"answer number {i}"},
        ]
    }


def test_a_preference_file_says_which_methods_can_use_it(tmp_path, capsys, tiny_model_dir):
    from tunesmith.data.methods import methods_for

    prefs = write(
        tmp_path / "prefs.jsonl",
        [{"prompt": f"q {i}", "chosen": "good", "rejected": "bad"} for i in range(12)],
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, _ = run(["data", "validate", str(prefs), "--model", str(tiny_model_dir)], capsys)
    assert code == 2  # the default method (supervised, as train's) cannot train on it
    assert f"{prefs}: method 'supervised' trains on conversations" in out
    assert "they are for method 'dpo'" in out
    assert "methods: supervised ✗ (needs conversations" in out
    dpo = methods_for("preference")["dpo"]
    assert ("dpo ✓" if dpo == "usable" else f"dpo ✗ ({dpo})") in out
    assert "the data is usable" not in out
    code, out, _ = run(["data", "validate", str(prefs), "--json", "--no-tokens"], capsys)
    report = json.loads(out)
    assert report["methods"]["supervised"].startswith("needs conversations")
    assert report["error_codes"] == {"method": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_a_chat_file_for_reinforcement_names_each_answer_that_should_not_be_there(tmp_path, capsys):
    data = write(tmp_path / "d.jsonl", [chat(i) for i in range(12)])
    code, out, _ = run(
        ["data", "validate", str(data), "--no-tokens", "--method", "reinforcement"], capsys
    )
    assert code == 2 and "a reinforcement prompt must end with a user message" in out
    assert f"{data}:1" in out and "messages[1].role" in out
    prompts = [
        {"messages": [{"role": "user", "content": f"What is {i} + 1?"}], "answer": i + 1}
        for i in range(12)
    ]
    data = write(tmp_path / "p.jsonl", prompts)
    code, out, _ = run(
        ["data", "validate", str(data), "--no-tokens", "--method", "reinforcement"], capsys
    )
    assert code == 0, out
    code, out, _ = run(["data", "validate", str(data), "--no-tokens", "--method", "dpo"], capsys)
    assert code == 2 and f"{data}: method 'dpo' trains on preference pairs" in out


def test_an_unknown_method_exits_2_naming_it(tmp_path, capsys):
    data = write(tmp_path / "d.jsonl", [chat(i) for i in range(12)])
    code, _, err = run(["data", "validate", str(data), "--no-tokens", "--method", "ppo"], capsys)
    assert code == 2 and "unknown method 'ppo'" in err


def test_validate_uses_trains_max_seq_len(tmp_path, capsys, tiny_model_dir):
    from tunesmith.config import DataSpec

    data = write(tmp_path / "d.jsonl", [chat(i) for i in range(12)])
    code, out, _ = run(
        ["data", "validate", str(data), "--model", str(tiny_model_dir), "--json"], capsys
    )
    report = json.loads(out)
    assert code == 0 and report["settings"]["max_seq_len"] == DataSpec().max_seq_len
    assert report["hyperparameters"]["max_seq_len"] == DataSpec().max_seq_len


def test_duplicates_warn_with_lines_and_dedupe_drops_them(tmp_path, capsys):
    rows = [chat(i) for i in range(12)] + [chat(0), chat(5)]
    data = write(tmp_path / "d.jsonl", rows)
    code, out, _ = run(["data", "validate", str(data), "--no-tokens"], capsys)
    assert code == 0 and "the data is usable for method supervised" in out
    assert f"{data}:13: exact duplicate of line 1: kept" in out
    assert f"{data}:14: exact duplicate of line 6: kept" in out
    assert "--dedupe" in out
    code, out, _ = run(["data", "validate", str(data), "--no-tokens", "--dedupe"], capsys)
    assert code == 0 and "12 ok, 0 rejected, 2 duplicates dropped" in out
    assert f"{data}:13: exact duplicate of line 1: dropped (dedupe)" in out
