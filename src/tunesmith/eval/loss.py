"""Held-out loss and perplexity, per example, on exactly the tokens training puts loss on.

A generated answer can be scored only by what it says; the loss measures how likely the model
finds the *reference* answer, which moves smoothly even when greedy text does not change.

Which tokens count is decided in one place, the data layer's tokenizer
(`tunesmith.data.tokenize`), the same code that builds training's labels: the reference answer
through its end-of-turn marker, not the template's newline after it. So the report's
`heldout_loss` and training's `val_loss` measure the same thing (for multi-turn data,
`train_on="last"` scores the final answer only, as training does with `train_on: last`).

We return, for each conversation, the summed negative log-likelihood of those tokens and their
number, so that (a) the paired bootstrap can resample examples and (b) perplexity is
token-weighted, the way training reports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunesmith import events
from tunesmith.data.records import Conversation, Message
from tunesmith.data.tokenize import IGNORE_INDEX, TokenizedExample, tokenize_many
from tunesmith.events import Reporter

ChatMessages = Sequence[dict[str, Any]]


@dataclass(frozen=True)
class ExampleLoss:
    nll: float  # summed over the scored tokens (natural log)
    tokens: int

    @property
    def mean(self) -> float:
        return self.nll / self.tokens if self.tokens else float("nan")


def _record(conv: ChatMessages | Conversation) -> Conversation:
    if isinstance(conv, Conversation):
        return conv
    if not conv or conv[-1].get("role") != "assistant":
        raise ValueError("each conversation must end with an assistant message")
    return Conversation(tuple(Message(m["role"], m["content"], name=m.get("name")) for m in conv))


def scored_tokens(
    tokenizer: Any,
    conversations: Sequence[ChatMessages | Conversation],
    *,
    train_on: str = "last",
) -> list[TokenizedExample]:
    """Token ids and labels (IGNORE_INDEX where nothing is scored) of each conversation, from
    the data layer's tokenizer: the labels are the training labels. Raises the first row's
    `DataError` (e.g. a template that cannot render it)."""
    records = [_record(c) for c in conversations]
    out = []
    for r in tokenize_many(records, tokenizer, train_on=train_on):
        if not isinstance(r, TokenizedExample):
            raise r
        out.append(r)
    return out


def example_losses(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[ChatMessages | Conversation],
    *,
    batch_size: int = 8,
    max_length: int | None = 2048,
    train_on: str = "last",
    on_event: Reporter | None = None,
    phase: str = "loss",
    label: str = "",
) -> list[ExampleLoss]:
    """NLL of each conversation's scored tokens (by default: its last, assistant, message)
    given everything before them. Emits `progress(phase, done, len(conversations))`."""
    import torch

    report = events.reporter(on_event)
    encoded = [
        (ex.input_ids, ex.labels)
        for ex in scored_tokens(tokenizer, conversations, train_on=train_on)
    ]
    if max_length:
        # Keep the answer: cut from the left when a conversation is too long.
        encoded = [(ids[-max_length:], labels[-max_length:]) for ids, labels in encoded]
    first = [
        next((j for j, t in enumerate(lab) if t != IGNORE_INDEX), len(lab)) for _, lab in encoded
    ]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    results: dict[int, ExampleLoss] = {}
    total = len(encoded)
    report(events.progress(phase, 0, total, label))
    was_training = model.training
    model.eval()
    try:
        for begin in range(0, len(order), max(1, batch_size)):
            idx = order[begin : begin + batch_size]
            width = max(len(encoded[i][0]) for i in idx)
            # Left padding puts every answer at the right edge, so the LM head (a fifth of a
            # small model's compute) only runs on the last `keep` positions.
            keep = max(len(encoded[i][0]) - first[i] for i in idx) + 1
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            labels = torch.full((len(idx), width), IGNORE_INDEX, dtype=torch.long)
            for row, i in enumerate(idx):
                seq, lab = encoded[i]
                off = width - len(seq)
                ids[row, off:] = torch.tensor(seq)
                mask[row, off:] = 1
                labels[row, off:] = torch.tensor(lab)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                logits = model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    logits_to_keep=min(keep, width),
                ).logits
            logits = logits[:, :-1].float()
            target = labels[:, width - logits.shape[1] :].to(logits.device)
            logp = torch.log_softmax(logits, dim=-1)
            valid = target != IGNORE_INDEX
            picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            nll = -(picked * valid).sum(dim=1)
            counts = valid.sum(dim=1)
            for row, i in enumerate(idx):
                results[i] = ExampleLoss(float(nll[row]), int(counts[row]))
            report(events.progress(phase, len(results), total, label))
    finally:
        if was_training:
            model.train()
    return [results[i] for i in range(len(encoded))]


def perplexity(losses: Sequence[ExampleLoss]) -> float:
    """Token-weighted perplexity exp(Σ nll / Σ tokens)."""
    tokens = sum(x.tokens for x in losses)
    if not tokens:
        return float("nan")
    return math.exp(sum(x.nll for x in losses) / tokens)


def perplexity_aggregate(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Bootstrap aggregate: values are per-example mean NLLs, weights their token counts."""
    total = (values * weights).sum(axis=-1) / np.maximum(weights.sum(axis=-1), 1e-12)
    return np.exp(total)
