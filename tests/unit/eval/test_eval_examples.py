"""Held-out files: any data format becomes (prompt, reference) pairs with their source line."""

from __future__ import annotations

import json

import pytest

from tunesmith.errors import DataError
from tunesmith.eval import examples as E


def _write(path, rows) -> None:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_chat_and_alpaca_files_give_prompts_and_references(tmp_path) -> None:
    chat = tmp_path / "chat.jsonl"
    _write(
        chat,
        [
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "q1"},
                    {"role": "assistant", "content": "a1"},
                ]
            }
        ]
        * 2,
    )
    got = E.load_examples(chat)
    assert len(got) == 2
    assert got[0].prompt == ({"role": "system", "content": "s"}, {"role": "user", "content": "q1"})
    assert got[0].reference == "a1" and got[0].user_text == "q1"
    assert got[1].source.endswith(":2")
    alpaca = tmp_path / "alpaca.jsonl"
    _write(alpaca, [{"instruction": "Add", "input": "2 and 3", "output": "5"}])
    (ex,) = E.load_examples(alpaca)
    assert ex.reference == "5" and "2 and 3" in ex.prompt[-1]["content"]
    assert E.load_examples(chat, limit=1)[0].reference == "a1"


def test_sharegpt_and_preference_files_are_read_by_the_data_layer(tmp_path) -> None:
    path = tmp_path / "sg.jsonl"
    _write(
        path,
        [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}],
    )
    (ex,) = E.load_examples(path)
    assert ex.reference == "hello" and ex.prompt[0]["role"] == "user"
    assert ex.origin is not None and ex.origin.line == 1
    pairs = tmp_path / "pairs.jsonl"
    _write(pairs, [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
    (pair,) = E.load_examples(pairs)
    assert pair.reference == "4" and pair.user_text == "2+2?"


def test_bad_lines_are_reported_with_their_line(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path.write_text(json.dumps(good) + "\nnot json\n")
    with pytest.raises(DataError, match=":2"):
        E.load_examples(path)


def test_examples_must_end_with_an_answer_and_exist(tmp_path) -> None:
    path = tmp_path / "q.jsonl"
    _write(
        path,
        [
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "again?"},
                ]
            }
        ],
    )
    with pytest.raises(DataError):
        E.load_examples(path)
    with pytest.raises(DataError, match="does not exist"):
        E.load_examples(tmp_path / "missing.jsonl")
