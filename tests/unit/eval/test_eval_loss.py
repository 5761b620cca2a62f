"""Held-out loss: only the answer's tokens count, batching does not change the numbers."""

from __future__ import annotations

import math

import pytest

from tunesmith.eval.loss import answer_token_ids, example_losses, perplexity

CONVS = [
    [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "hello"}],
    [
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "Classify: my invoice is wrong, please help urgent"},
        {"role": "assistant", "content": '{"category": "billing", "priority": "high"}'},
    ],
    [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris is the capital of France."},
    ],
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from tunesmith.models import load_model

    return load_model(tiny_model_dir)


def test_answer_tokens_are_what_follows_the_generation_prompt(tiny) -> None:
    ids, start = answer_token_ids(tiny.tokenizer, CONVS[0])
    answer = tiny.tokenizer.decode(ids[start:])
    assert answer.startswith("hello")
    assert "<|im_end|>" in answer  # the end-of-turn marker is part of what must be learned
    assert "Say hello" not in answer


def test_losses_match_a_manual_computation_and_ignore_batching(tiny) -> None:
    import torch

    batched = example_losses(tiny.model, tiny.tokenizer, CONVS, batch_size=8)
    single = example_losses(tiny.model, tiny.tokenizer, CONVS, batch_size=1)
    for a, b in zip(batched, single, strict=True):
        assert a.tokens == b.tokens
        assert a.nll == pytest.approx(b.nll, rel=1e-4)
    ids, start = answer_token_ids(tiny.tokenizer, CONVS[2])
    with torch.no_grad():
        logits = tiny.model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1)
    manual = -sum(logp[i - 1, ids[i]].item() for i in range(start, len(ids)))
    assert batched[2].tokens == len(ids) - start
    assert batched[2].nll == pytest.approx(manual, rel=1e-4)


def test_perplexity_is_token_weighted(tiny) -> None:
    losses = example_losses(tiny.model, tiny.tokenizer, CONVS)
    expected = math.exp(sum(x.nll for x in losses) / sum(x.tokens for x in losses))
    assert perplexity(losses) == pytest.approx(expected)
    assert perplexity([]) != perplexity([])  # nan for no tokens


def test_conversation_must_end_with_an_answer(tiny) -> None:
    with pytest.raises(ValueError):
        example_losses(tiny.model, tiny.tokenizer, [[{"role": "user", "content": "hi"}]])
