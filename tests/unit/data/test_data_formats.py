"""Every input format becomes the same canonical records; problems name line and field."""

from __future__ import annotations

import pytest

from tunesmith.data.formats import detect_format, normalize_format, record_to_json
from tunesmith.data.prepare import read_records
from tunesmith.data.records import Conversation, Message, PreferencePair
from tunesmith.errors import DataError

Q, A = "What is the capital of France?", "Paris."
EXPECTED = (Message("user", Q), Message("assistant", A))

SFT_ROWS = {
    "chat": {"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": A}]},
    "alpaca": {"instruction": Q, "input": "", "output": A},
    "prompt_completion": {"prompt": Q, "completion": A},
    "input_output": {"input": Q, "output": A},
    "sharegpt": {"conversations": [{"from": "human", "value": Q}, {"from": "gpt", "value": A}]},
}
PREF_ROWS = {
    "openai_dpo": {
        "input": {"messages": [{"role": "user", "content": Q}]},
        "preferred_output": [{"role": "assistant", "content": A}],
        "non_preferred_output": [{"role": "assistant", "content": "Lyon."}],
    },
    "preference": {"prompt": Q, "chosen": A, "rejected": "Lyon."},
}


@pytest.mark.parametrize("fmt", sorted(SFT_ROWS))
def test_sft_formats_become_the_same_conversation(write_jsonl, fmt):
    row = SFT_ROWS[fmt]
    assert detect_format(row) == fmt
    (rec,) = read_records(write_jsonl([row]))
    assert isinstance(rec, Conversation)
    assert rec.messages == EXPECTED
    assert rec.source.line == 1
    assert rec.completion_only == (fmt in ("prompt_completion", "input_output"))
    # a forced format reads the same row the same way
    (forced,) = read_records(write_jsonl([row], "forced.jsonl"), format=fmt)
    assert forced.messages == EXPECTED


@pytest.mark.parametrize("fmt", sorted(PREF_ROWS))
def test_preference_formats_become_pairs(write_jsonl, fmt):
    (rec,) = read_records(write_jsonl([PREF_ROWS[fmt]]))
    assert isinstance(rec, PreferencePair)
    assert rec.prompt == (Message("user", Q),) and rec.chosen == A and rec.rejected == "Lyon."
    out = record_to_json(rec)
    assert out["preferred_output"][0]["content"] == A


def test_alpaca_input_and_system_are_kept(write_jsonl):
    row = {"instruction": "Translate", "input": "hello", "output": "bonjour", "system": "Be terse."}
    (rec,) = read_records(write_jsonl([row]))
    assert rec.messages[0] == Message("system", "Be terse.")
    assert rec.messages[1].content == "Translate\n\nhello"


def test_chat_weight_and_name_are_kept(write_jsonl):
    row = {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "q", "name": "ann"},
            {"role": "assistant", "content": "draft", "weight": 0},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "final", "weight": 1},
        ],
        "id": "x1",
    }
    (rec,) = read_records(write_jsonl([row]))
    assert rec.messages[1].name == "ann"
    assert [m.weight for m in rec.messages] == [None, None, 0, None, 1]
    assert rec.meta == {"id": "x1"}
    assert record_to_json(rec) == row


def test_content_parts_text_only(write_jsonl):
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": "yo"},
        ]
    }
    (rec,) = read_records(write_jsonl([row]))
    assert rec.messages[0].content == "hi"


BAD = [
    (
        {"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]},
        "unknown_role",
        "messages[1].role",
    ),
    (
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
        "empty_content",
        "messages[1].content",
    ),
    ({"messages": [{"role": "user", "content": "q"}]}, "no_assistant", "messages"),
    (
        {
            "messages": [
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
            ]
        },
        "role_order",
        "messages[0].role",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
            ]
        },
        "role_order",
        "messages[1].role",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "q2"},
            ]
        },
        "role_order",
        "messages[2].role",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "weight": 2},
            ]
        },
        "bad_weight",
        "messages[1].weight",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "weight": 0},
            ]
        },
        "no_assistant",
        "messages",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "extra": 1},
            ]
        },
        "unknown_key",
        "messages[1]",
    ),
    (
        {
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "label": "x",
        },
        "unknown_key",
        "label",
    ),
    ({"messages": [{"content": "q"}]}, "missing_key", "messages[0]"),
    ({"instruction": "do it"}, "missing_key", "output"),
    ({"prompt": "q"}, "missing_key", "completion"),
    ({"prompt": "q", "completion": 3}, "bad_type", "completion"),
    (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
            ]
        },
        "unsupported",
        "messages[1].tool_calls",
    ),
    (
        {"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "42"}]},
        "unsupported",
        "messages[1].role",
    ),
    (
        {"conversations": [{"from": "human", "value": "q"}, {"from": "bard", "value": "a"}]},
        "unknown_role",
        "conversations[1].from",
    ),
]


@pytest.mark.parametrize(
    ("row", "code", "field"), BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)]
)
def test_row_errors_name_line_field_and_code(write_jsonl, row, code, field):
    good = SFT_ROWS[detect_format(row)]
    path = write_jsonl([good, good, row])
    with pytest.raises(DataError) as info:
        list(read_records(path))
    err = info.value
    assert err.where == f"{path}:3"
    assert err.code == code and err.field == field
    assert field in str(err)


def test_tool_calls_say_not_supported_yet(write_jsonl):
    row = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "tools": [{"type": "function"}],
    }
    with pytest.raises(DataError, match="not supported yet"):
        list(read_records(write_jsonl([row])))


def test_identical_preference_answers_are_an_error(write_jsonl):
    row = {"prompt": "q", "chosen": "same", "rejected": "same "}
    with pytest.raises(DataError) as info:
        list(read_records(write_jsonl([row])))
    assert info.value.code == "identical_pair" and info.value.field == "rejected"


def test_mixed_formats_name_the_first_differing_line(write_jsonl):
    rows = [SFT_ROWS["chat"]] * 3 + [SFT_ROWS["alpaca"]] + [SFT_ROWS["chat"]]
    with pytest.raises(DataError) as info:
        list(read_records(write_jsonl(rows)))
    assert info.value.where.endswith(":4") and info.value.code == "mixed_format"
    assert "alpaca" in str(info.value) and "chat" in str(info.value)


def test_unknown_layout_and_unknown_forced_format(write_jsonl):
    with pytest.raises(DataError, match="cannot tell the format"):
        list(read_records(write_jsonl([{"question": "q", "answer": "a"}])))
    with pytest.raises(DataError, match="unknown data format"):
        normalize_format("yaml")
    assert normalize_format("dpo") == "openai_dpo" and normalize_format("auto") is None
