"""The validation report: every bad row with line/field/reason, warnings, stats, estimates."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_rows import chat_row, chat_rows

from tunesmith.data.tokenize import tokenize_many
from tunesmith.data.validate import add_estimates, validate

U = {"role": "user", "content": "question here"}
A = {"role": "assistant", "content": "an answer"}

# (bad line text or object, expected code, expected field) - each placed at line 7
ERRORS = [
    ('{"messages": [', "invalid_json", None),
    ("[1, 2, 3]", "not_object", None),
    ({"messages": [U, {"content": "x"}]}, "missing_key", "messages[1]"),
    ({"messages": [U, A], "extra": 1}, "unknown_key", "extra"),
    ({"messages": [U, {"role": "robot", "content": "x"}]}, "unknown_role", "messages[1].role"),
    (
        {"messages": [U, {"role": "assistant", "content": ""}]},
        "empty_content",
        "messages[1].content",
    ),
    ({"messages": [U]}, "no_assistant", "messages"),
    ({"messages": [A, U, A]}, "role_order", "messages[0].role"),
    ({"messages": [U, {**A, "weight": 0.5}]}, "bad_weight", "messages[1].weight"),
    (chat_row(0), "duplicate", None),
    ({"instruction": "x", "output": "y"}, "mixed_format", None),
    ({"messages": [U, {"role": "assistant", "content": "word " * 400}]}, "too_long", "messages"),
]


@pytest.mark.parametrize(("bad", "code", "field"), ERRORS, ids=[e[1] for e in ERRORS])
def test_each_error_names_line_7(write_jsonl, tiny_tokenizer, bad, code, field):
    rows = chat_rows(12)
    rows[6] = bad
    path = write_jsonl(rows)
    report, _ = validate(path, tiny_tokenizer, max_seq_len=256)
    assert not report.ok
    assert [(e.line, e.code, e.field) for e in report.errors] == [(7, code, field)]
    assert report.errors[0].path == str(path)
    assert report.rows_read == 12 and report.rows_rejected == 1 and report.rows_ok == 11
    if code == "duplicate":
        assert "line 1" in report.errors[0].message


def test_all_errors_are_reported_not_just_the_first(write_jsonl, tiny_tokenizer):
    rows = chat_rows(30)
    for i in (2, 9, 17, 25):
        rows[i] = "{oops"
    report, _ = validate(write_jsonl(rows), tiny_tokenizer)
    assert [e.line for e in report.errors] == [3, 10, 18, 26]
    assert report.error_codes == {"invalid_json": 4}
    assert report.rows_read == report.rows_ok + report.rows_rejected == 30


def test_fewer_than_ten_examples_is_an_error(write_jsonl, tiny_tokenizer):
    report, _ = validate(write_jsonl(chat_rows(9)), tiny_tokenizer)
    assert [(e.code, e.line) for e in report.errors] == [("too_few", None)]


def test_truncate_keeps_the_row_and_says_so(write_jsonl, tiny_tokenizer):
    rows = chat_rows(12)
    rows[6] = {"messages": [U, {"role": "assistant", "content": "word " * 400}]}
    report, _ = validate(write_jsonl(rows), tiny_tokenizer, max_seq_len=256, truncate=True)
    assert report.ok and report.files[0].truncated == 1 and report.stats["truncated"] == 1
    assert [(w.code, w.line) for w in report.warnings] == [("truncated", 7)]
    assert report.to_dict()["settings"]["truncate"] is True


def test_overlap_with_validation_file(write_jsonl, tiny_tokenizer):
    train = write_jsonl(chat_rows(12), "train.jsonl")
    val = write_jsonl([chat_row(50), chat_row(51), chat_row(5)], "val.jsonl")
    report, _ = validate(train, tiny_tokenizer, validation=val)
    assert [(e.code, e.path, e.line) for e in report.errors] == [("overlap", str(val), 3)]
    assert "train.jsonl:6" in report.errors[0].message
    assert [f.role for f in report.files] == ["train", "validation"]


def test_token_statistics_match_the_tokenizer(write_jsonl, tiny_tokenizer):
    from tunesmith.data.prepare import read_records

    path = write_jsonl(chat_rows(20))
    report, _ = validate(path, tiny_tokenizer)
    examples = tokenize_many(list(read_records(path)), tiny_tokenizer)
    total = np.array([len(e.input_ids) for e in examples])
    trained = np.array([e.n_trained for e in examples])
    tokens = report.stats["tokens"]
    assert tokens["total"]["max"] == total.max() and tokens["total"]["min"] == total.min()
    assert tokens["total"]["p95"] == pytest.approx(np.percentile(total, 95))
    assert tokens["trained"]["sum"] == trained.sum()
    assert tokens["prompt"]["sum"] == total.sum() - trained.sum()
    assert report.stats["examples"] == 20 and report.stats["messages"]["mean"] == 2


def test_warnings(write_jsonl, tiny_tokenizer):
    rows = chat_rows(20)
    rows[3] = {
        "messages": [
            {"role": "user", "content": "WHAT is the capital of france"},
            {"role": "assistant", "content": "paris is the capital of France"},
        ]
    }
    rows[4] = {
        "messages": [
            {"role": "user", "content": "Thanks for the help"},
            {"role": "assistant", "content": "ok"},
        ]
    }  # short + conflicting
    rows[5] = chat_row(5, system="You are a support agent.")
    report, _ = validate(write_jsonl(rows), tiny_tokenizer)
    assert report.ok
    got = {(w.code, w.line) for w in report.warnings}
    assert ("near_duplicate", 4) in got
    conflict = next(w for w in report.warnings if w.code == "conflicting_answers")
    assert conflict.line == 10 and ":5" in conflict.message  # same prompt as line 5
    assert ("short_answer", 5) in got
    system = next(w for w in report.warnings if w.code == "system_prompt")
    assert system.line == 6 and "1 examples have a system prompt and 19 do not" in system.message


def test_label_imbalance_for_short_label_tasks(write_jsonl, tiny_tokenizer):
    rows = []
    for i in range(40):
        label = "positive" if i < 36 else "negative"
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Classify review number {i}"},
                    {"role": "assistant", "content": label},
                ]
            }
        )
    report, _ = validate(write_jsonl(rows), tiny_tokenizer)
    assert [w.code for w in report.warnings] == ["label_imbalance"]
    assert report.stats["labels"] == {"positive": 36, "negative": 4}


def test_json_report_keys_are_stable(write_jsonl, tiny_tokenizer):
    report, state = validate(write_jsonl(chat_rows(12)), tiny_tokenizer, max_seq_len=1024)
    add_estimates(
        report,
        n_params=1_000_000,
        lengths=state.stats.total,
        max_seq_len=1024,
        flops_per_second=1e9,
    )
    data = json.loads(report.to_json())
    assert list(data) == [
        "ok",
        "settings",
        "files",
        "rows_read",
        "rows_ok",
        "rows_rejected",
        "errors",
        "warnings",
        "error_count",
        "warning_count",
        "error_codes",
        "stats",
        "hyperparameters",
        "estimate",
    ]
    hp = data["hyperparameters"]
    assert hp["rows"] == 1 and hp["epochs"] == 25 and hp["total_steps"] == 25
    est = data["estimate"]
    assert est["train_tokens"] == data["stats"]["tokens"]["total"]["sum"] * 25
    assert est["seconds"] == pytest.approx(est["train_tokens"] * 4 * 1_000_000 / 1e9, rel=1e-3)


def test_structure_only_without_tokenizer(write_jsonl):
    report, _ = validate(write_jsonl(chat_rows(12)), None)
    assert report.ok and report.stats["tokens"] is None


def test_preference_file_validates_with_token_counts(write_jsonl, tiny_tokenizer):
    rows = [
        {"prompt": f"question {i}", "chosen": "good answer", "rejected": "bad"} for i in range(12)
    ]
    rows[6] = {"prompt": "q", "chosen": "", "rejected": "x"}
    report, _ = validate(write_jsonl(rows), tiny_tokenizer)
    assert [(e.line, e.code, e.field) for e in report.errors] == [(7, "empty_content", "chosen")]
    assert report.stats["kind"] == "preference" and report.stats["tokens"]["total"]["min"] > 0


def test_errors_are_listed_in_line_order(write_jsonl, tiny_tokenizer):
    rows = chat_rows(600)
    rows[4] = {"messages": [U, {"role": "assistant", "content": "word " * 400}]}  # found late
    rows[99] = "{bad json"  # found first (while reading, before the chunk is tokenized)
    report, _ = validate(write_jsonl(rows), tiny_tokenizer, max_seq_len=256)
    assert [(e.line, e.code) for e in report.errors] == [(5, "too_long"), (100, "invalid_json")]
