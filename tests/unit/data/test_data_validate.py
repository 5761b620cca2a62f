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
        "rows_dropped",
        "errors",
        "warnings",
        "error_count",
        "warning_count",
        "error_codes",
        "stats",
        "methods",
        "hyperparameters",
        "estimate",
    ]
    hp = data["hyperparameters"]
    assert hp["rows"] == 1 and hp["epochs"] == 25 and hp["total_steps"] == 25
    est = data["estimate"]
    assert est["train_tokens"] == data["stats"]["tokens"]["total"]["sum"] * 25
    train_s = est["train_tokens"] * 4 * 1_000_000 / 1e9  # 4 N FLOPs per token at 1 GFLOP/s
    assert est["train_seconds"] == pytest.approx(train_s, rel=1e-3)
    assert est["seconds"] == pytest.approx(train_s + est["setup_seconds"], rel=1e-3)
    assert est["compare_seconds"] is None and est["val_tokens"] == 0  # no held-out file
    assert est["basis"].startswith("a matmul probe")


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


# -- issue 11 item 11: which methods can use a file ---------------------------------------------


def _pairs(n: int = 12) -> list[dict]:
    return [
        {"prompt": f"question {i}", "chosen": "good answer", "rejected": "bad"} for i in range(n)
    ]


def test_the_report_says_which_methods_can_use_the_file(write_jsonl, tiny_tokenizer):
    from tunesmith.config import METHODS_NOT_YET

    def status(method: str) -> str:  # a method that fits: usable, or honestly not yet
        return (
            f"fits the data, but {METHODS_NOT_YET[method]}"
            if method in METHODS_NOT_YET
            else ("usable")
        )

    chat, _ = validate(write_jsonl(chat_rows(12), "chat.jsonl"), tiny_tokenizer)
    assert chat.methods["supervised"] == "usable"
    assert chat.methods["dpo"].startswith("needs preference pairs")
    assert chat.methods["reinforcement"].startswith("needs prompts")
    prefs, _ = validate(write_jsonl(_pairs(), "prefs.jsonl"), tiny_tokenizer)
    assert prefs.ok  # no method asked for: well-formed data, and the report says for what
    assert prefs.methods["supervised"].startswith("needs conversations")
    assert prefs.methods["dpo"] == status("dpo")
    assert json.loads(prefs.to_json())["methods"] == prefs.methods


@pytest.mark.parametrize(
    ("method", "rows", "says"),
    [
        ("supervised", "pairs", "method 'supervised' trains on conversations"),
        ("sft", "pairs", "method 'supervised' trains on conversations"),
        ("dpo", "chat", "method 'dpo' trains on preference pairs"),
        ("reinforcement", "pairs", "method 'reinforcement' trains on prompts"),
    ],
)
def test_a_method_that_cannot_train_on_the_file_is_an_error(
    write_jsonl, tiny_tokenizer, method, rows, says
):
    path = write_jsonl(_pairs() if rows == "pairs" else chat_rows(12), "data.jsonl")
    report, _ = validate(path, tiny_tokenizer, method=method)
    assert not report.ok
    (error,) = report.errors
    assert error.code == "method" and error.path == str(path) and error.line is None
    assert says in error.message
    if rows == "pairs":
        assert "but this file holds preference pairs" in error.message
        assert "they are for method 'dpo'" in error.message


def test_an_unknown_method_is_a_config_error(write_jsonl):
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown method 'banana'") as info:
        validate(write_jsonl(chat_rows(12)), None, method="banana")
    assert "supervised" in (info.value.hint or "")


# -- issue 11 item 17: exact duplicates are warnings naming the lines; dedupe drops them ---------


def test_exact_duplicates_are_warnings_naming_both_lines(write_jsonl, tiny_tokenizer):
    rows = chat_rows(12)
    rows[6] = chat_row(0)
    rows[9] = chat_row(0)
    report, state = validate(write_jsonl(rows), tiny_tokenizer, keep=True)
    assert report.ok and report.rows_ok == 12 and report.rows_dropped == 0
    dups = [(w.line, w.message) for w in report.warnings if w.code == "duplicate"]
    assert [line for line, _ in dups] == [7, 10]
    assert all("exact duplicate of line 1" in m for _, m in dups)
    assert len(state.kept["train"]) == 12  # kept: trained on as often as the file has them


def test_dedupe_drops_each_repeat_loudly(write_jsonl, tiny_tokenizer):
    rows = chat_rows(12)
    rows[6] = chat_row(0)
    rows[9] = chat_row(0)
    report, state = validate(write_jsonl(rows), tiny_tokenizer, keep=True, dedupe=True)
    assert report.ok and report.settings["dedupe"] is True
    assert report.rows_ok == 10 and report.rows_dropped == 2
    assert report.rows_read == report.rows_ok + report.rows_rejected + report.rows_dropped
    dropped = [w for w in report.warnings if w.code == "deduplicated"]
    assert [w.line for w in dropped] == [7, 10] and "dropped" in dropped[0].message
    assert [r.source.line for r, _ in state.kept["train"]] == [1, 2, 3, 4, 5, 6, 8, 9, 11, 12]


def test_overlap_with_training_data_stays_an_error(write_jsonl, tiny_tokenizer):
    train = write_jsonl(chat_rows(12), "train.jsonl")
    val = write_jsonl([chat_row(50), chat_row(3)], "val.jsonl")
    for dedupe in (False, True):
        report, _ = validate(train, tiny_tokenizer, validation=val, dedupe=dedupe)
        assert [(e.path, e.line, e.code) for e in report.errors] == [(str(val), 2, "overlap")]


def test_a_multi_mb_row_is_rejected_quickly_naming_its_line(tmp_path, tiny_model_dir, capsys):
    """A 5 MB row used to take GBs and many seconds to reject: now it is a one-line error at
    its line, decided by characters before tokenizing."""
    import time

    from tunesmith.cli import main

    rows = chat_rows(12)
    rows[4]["messages"][1]["content"] = "word " * 1_000_000
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["data", "validate", str(path), "--model", str(tiny_model_dir), "--max-seq-len", "128"]
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert time.perf_counter() - start < 10
    out = capsys.readouterr()
    printed = out.out + out.err
    assert exc.value.code == 2 and f"{path}:5" in printed and "characters" in printed
    assert "Traceback" not in printed


def test_chunks_hold_a_bounded_number_of_characters():
    from tunesmith.data import validate as validate_mod
    from tunesmith.data.records import Conversation, Message

    long = Conversation((Message("user", "q"), Message("assistant", "x" * (8 << 20))))
    sizes = [len(c) for c in validate_mod._chunks(iter([long] * 10), 512)]
    assert sizes == [4, 4, 2]  # cut at CHUNK_CHARS (32 Mi characters), not at 512 rows


@pytest.mark.parametrize(
    ("flops", "offered"),
    [
        (2e7, "--time-budget 5m"),  # a run of many minutes is offered the quick budget
        (4e8, None),  # a run of a few minutes is offered half its time
    ],
)
def test_without_a_budget_the_estimate_says_what_one_would_change(
    write_jsonl, tiny_tokenizer, flops, offered
):
    report, state = validate(write_jsonl(chat_rows(200)), tiny_tokenizer, max_seq_len=256)
    add_estimates(report, n_params=1_000_000, lengths=state.stats.total, flops_per_second=flops)
    est = report.estimate
    full = est["seconds"]
    hint = est["budget_hint"]
    budget_min = int(hint.split()[1].rstrip("m"))
    if offered:
        assert full > 600 and hint.startswith(offered)
    else:
        assert 120 <= full <= 600 and budget_min == round(full / 2 / 60)
    steps = int(hint.split("would train ")[1].split(" of ")[0])
    assert 0 < steps < report.hyperparameters["total_steps"]
