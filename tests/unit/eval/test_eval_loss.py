"""Held-out loss: exactly training's trained tokens count, batching does not change the numbers."""

from __future__ import annotations

import math

import pytest

from tunesmith.data import Conversation, Message, tokenize_conversation
from tunesmith.data.tokenize import IGNORE_INDEX
from tunesmith.eval.loss import example_losses, perplexity, scored_tokens

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


def _trained(labels: list[int]) -> list[int]:
    return [t for t in labels if t != IGNORE_INDEX]


def test_answer_tokens_are_the_answer_through_its_end_of_turn_marker(tiny) -> None:
    (ex,) = scored_tokens(tiny.tokenizer, [CONVS[0]])
    answer = tiny.tokenizer.decode(_trained(ex.labels))
    assert answer.startswith("hello")
    assert "<|im_end|>" in answer  # the end-of-turn marker is part of what must be learned
    assert "Say hello" not in answer
    assert answer == "hello<|im_end|>"  # not the template's newline after it


def test_eval_scores_exactly_the_training_labels(tiny) -> None:
    """One rule for which tokens carry loss: the report's heldout_loss and training's val_loss
    measure the same tokens (the data layer's labels, the ones training builds)."""
    conv = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "Four."}]
    record = Conversation((Message("user", "What is 2+2?"), Message("assistant", "Four.")))
    train = tokenize_conversation(record, tiny.tokenizer)  # what training puts loss on
    for source in (conv, record):
        (ev,) = scored_tokens(tiny.tokenizer, [source])
        assert ev.input_ids == train.input_ids
        assert ev.labels == train.labels  # same ids at the same positions
    assert tiny.tokenizer.decode(_trained(train.labels)) == "Four.<|im_end|>"
    (loss,) = example_losses(tiny.model, tiny.tokenizer, [conv])
    assert loss.tokens == train.n_trained == len(_trained(train.labels))
    for conv in CONVS:  # and so for every conversation
        messages = tuple(Message(m["role"], m["content"]) for m in conv)
        want = tokenize_conversation(Conversation(messages), tiny.tokenizer)
        (got,) = scored_tokens(tiny.tokenizer, [conv])
        assert got.labels == want.labels


def test_losses_match_a_manual_computation_and_ignore_batching(tiny) -> None:
    import torch

    batched = example_losses(tiny.model, tiny.tokenizer, CONVS, batch_size=8)
    single = example_losses(tiny.model, tiny.tokenizer, CONVS, batch_size=1)
    for a, b in zip(batched, single, strict=True):
        assert a.tokens == b.tokens
        assert a.nll == pytest.approx(b.nll, rel=1e-4)
    (ex,) = scored_tokens(tiny.tokenizer, [CONVS[2]])
    ids, labels = ex.input_ids, ex.labels
    with torch.no_grad():
        logits = tiny.model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1)
    scored = [i for i in range(1, len(ids)) if labels[i] != IGNORE_INDEX]
    manual = -sum(logp[i - 1, ids[i]].item() for i in scored)
    assert batched[2].tokens == len(scored) == ex.n_trained
    assert batched[2].nll == pytest.approx(manual, rel=1e-4)


def test_progress_events_count_conversations(tiny) -> None:
    seen = []
    example_losses(tiny.model, tiny.tokenizer, CONVS, batch_size=2, on_event=seen.append)
    assert [(e.kind, e.phase) for e in seen] == [("progress", "loss")] * len(seen)
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == len(CONVS)


def test_perplexity_is_token_weighted(tiny) -> None:
    losses = example_losses(tiny.model, tiny.tokenizer, CONVS)
    expected = math.exp(sum(x.nll for x in losses) / sum(x.tokens for x in losses))
    assert perplexity(losses) == pytest.approx(expected)
    assert perplexity([]) != perplexity([])  # nan for no tokens


def test_conversation_must_end_with_an_answer(tiny) -> None:
    with pytest.raises(ValueError):
        example_losses(tiny.model, tiny.tokenizer, [[{"role": "user", "content": "hi"}]])
