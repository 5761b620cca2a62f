"""Preference pairs for DPO/ORPO: the SFT template and label rule, SFT's split, clear errors."""

from __future__ import annotations

import pytest
from data_rows import chat_rows

from tunesmith.data import prepare_preference, prepare_sft
from tunesmith.data.records import Conversation, Message
from tunesmith.data.tokenize import IGNORE_INDEX, tokenize_conversation
from tunesmith.errors import DataError


def pairs(n: int = 12, *, multi_turn: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"question {i}?"}]
        if multi_turn:
            prompt += [
                {"role": "assistant", "content": "an earlier answer"},
                {"role": "user", "content": "and now?"},
            ]
        rows.append({"prompt": prompt, "chosen": f"good answer {i}", "rejected": "bad"})
    return rows


def test_each_answer_is_tokenized_like_sft_with_train_on_last(write_jsonl, tiny_tokenizer):
    data = prepare_preference(write_jsonl(pairs(12, multi_turn=True)), tiny_tokenizer)
    assert len(data.train) == 12 and data.validation == [] and data.validation_sha256 is None
    first = data.train[0]
    prompt = (
        Message("user", "question 0?"),
        Message("assistant", "an earlier answer"),
        Message("user", "and now?"),
    )
    for answer, got in (("good answer 0", first.chosen), ("bad", first.rejected)):
        want = tokenize_conversation(
            Conversation((*prompt, Message("assistant", answer))), tiny_tokenizer, train_on="last"
        )
        assert got.input_ids == want.input_ids and got.labels == want.labels
    # the earlier assistant turn in the prompt carries no loss; the final answer does
    chosen = first.chosen
    trained = [t for t, lab in zip(chosen.input_ids, chosen.labels, strict=True) if lab != -100]
    text = tiny_tokenizer.decode(trained)
    assert text.startswith("good answer 0") and "earlier" not in text
    assert first.prompt_length == first.chosen.prompt_tokens
    # both answers share the prompt tokens
    n = first.prompt_length
    assert first.chosen.input_ids[:n] == first.rejected.input_ids[:n]
    assert all(lab == IGNORE_INDEX for lab in first.rejected.labels[:n])


def test_validation_fraction_splits_like_sft(write_jsonl, tiny_tokenizer):
    path = write_jsonl(pairs(40))
    data = prepare_preference(path, tiny_tokenizer, validation_fraction=0.25, seed=3)
    assert len(data.train) == 30 and len(data.validation) == 10
    assert data.validation_sha256 and data.train_sha256
    chosen = {tuple(p.chosen.input_ids) for p in data.train}
    assert not chosen & {tuple(p.chosen.input_ids) for p in data.validation}
    again = prepare_preference(path, tiny_tokenizer, validation_fraction=0.25, seed=3)
    assert [p.chosen.input_ids for p in again.validation] == [
        p.chosen.input_ids for p in data.validation
    ]


def test_a_validation_file_of_pairs(write_jsonl, tiny_tokenizer):
    train = write_jsonl(pairs(12), "train.jsonl")
    val = write_jsonl(pairs(16)[12:], "val.jsonl")
    data = prepare_preference(train, tiny_tokenizer, validation=val)
    assert len(data.validation) == 4 and data.validation_sha256 == data.report.files[1].sha256


def test_a_chat_file_given_to_dpo_fails_naming_the_file(write_jsonl, tiny_tokenizer):
    path = write_jsonl(chat_rows(12), "chat.jsonl")
    with pytest.raises(DataError) as info:
        prepare_preference(path, tiny_tokenizer, method="dpo")
    err = info.value
    assert err.where == str(path) and err.param == "data.train"
    assert "method 'dpo' trains on preference pairs" in err.message
    assert "this file holds conversations" in err.message
    with pytest.raises(DataError, match="method 'orpo' trains on preference pairs"):
        prepare_preference(path, tiny_tokenizer, method="orpo")


def test_the_reverse_still_fails_for_sft(write_jsonl, tiny_tokenizer):
    path = write_jsonl(pairs(12), "prefs.jsonl")
    with pytest.raises(DataError) as info:
        prepare_sft(path, tiny_tokenizer)
    assert "they are for method 'dpo' or 'orpo'" in info.value.message


def test_an_over_long_answer_names_the_line_and_the_answer(write_jsonl, tiny_tokenizer):
    rows = pairs(12)
    rows[4]["rejected"] = "word " * 400
    with pytest.raises(DataError) as info:
        prepare_preference(write_jsonl(rows), tiny_tokenizer, max_seq_len=64)
    assert info.value.where.endswith(":5") and "rejected" in info.value.message
    assert "max_seq_len 64" in info.value.message


def test_identical_answers_are_an_error(write_jsonl, tiny_tokenizer):
    rows = pairs(12)
    rows[2]["rejected"] = rows[2]["chosen"]
    with pytest.raises(DataError) as info:
        prepare_preference(write_jsonl(rows), tiny_tokenizer)
    assert info.value.where.endswith(":3")
