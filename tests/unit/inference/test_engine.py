"""Generation through the chat template: batching must not change answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.inference import GenerationSettings, generate, prompt_ids, stream
from tunesmith.inference.engine import batches
from tunesmith.models import load_model


def test_prompt_ids_end_with_generation_prompt(tiny_model_dir: Path) -> None:
    lm = load_model(tiny_model_dir)
    ids = prompt_ids(lm.tokenizer, [{"role": "user", "content": "hello"}])
    text = lm.tokenizer.decode(ids)
    assert text.endswith("<|im_start|>assistant\n")
    assert "hello<|im_end|>" in text


def test_batched_generation_matches_one_by_one(tiny_model_dir: Path) -> None:
    lm = load_model(tiny_model_dir)
    convs = [
        [{"role": "user", "content": "hi"}],
        [{"role": "user", "content": "what is the capital of france and germany, please?"}],
        [{"role": "system", "content": "be short"}, {"role": "user", "content": "refund"}],
    ]
    settings = GenerationSettings(max_new_tokens=12, batch_size=3)
    batched = generate(lm.model, lm.tokenizer, convs, settings)
    single = [
        generate(lm.model, lm.tokenizer, [c], GenerationSettings(max_new_tokens=12))[0]
        for c in convs
    ]
    assert batched == single
    assert all(isinstance(a, str) for a in batched)


def test_stream_yields_the_same_text_as_generate(tiny_model_dir: Path) -> None:
    lm = load_model(tiny_model_dir)
    conv = [{"role": "user", "content": "hello there"}]
    settings = GenerationSettings(max_new_tokens=10)
    whole = generate(lm.model, lm.tokenizer, [conv], settings)[0]
    pieces = list(stream(lm.model, lm.tokenizer, conv, settings))
    assert "".join(pieces).strip() == whole


@pytest.mark.parametrize(
    ("lengths", "rows", "tokens", "new", "expected"),
    [
        ([5, 3, 9, 1], 2, 10_000, 4, [[3, 1], [0, 2]]),  # shortest first, at most 2 rows
        ([10] * 5, 64, 60, 10, [[0, 1, 2], [3, 4]]),  # 3 x (10 + 10) fit 60 tokens, 4 do not
        ([10, 10, 500, 10], 64, 100, 10, [[0, 1, 3], [2]]),  # a prompt over budget goes alone
        ([], 8, 100, 4, []),
    ],
)
def test_generation_batches_are_bounded_in_rows_and_tokens(lengths, rows, tokens, new, expected):
    got = batches(lengths, rows, tokens, new)
    assert got == expected
    for group in got:
        assert len(group) <= rows
        assert len(group) == 1 or len(group) * (max(lengths[i] for i in group) + new) <= tokens


def test_answers_do_not_depend_on_the_batch_budget(tiny_model_dir: Path) -> None:
    lm = load_model(tiny_model_dir)
    convs = [[{"role": "user", "content": "word " * k}] for k in range(1, 9)]
    wide = generate(lm.model, lm.tokenizer, convs, GenerationSettings(max_new_tokens=8))
    narrow = GenerationSettings(max_new_tokens=8, batch_size=3, batch_tokens=64)
    assert generate(lm.model, lm.tokenizer, convs, narrow) == wide
