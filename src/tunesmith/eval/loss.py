"""Held-out loss and perplexity, per example, through the model's own chat template.

A generated answer can be scored only by what it says; the loss measures how likely the model
finds the *reference* answer, which moves smoothly even when greedy text does not change.
We return, for each conversation, the summed negative log-likelihood of its final assistant
turn and the number of tokens in it, so that (a) the paired bootstrap can resample examples
and (b) perplexity is computed token-weighted, the way training reports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ChatMessages = Sequence[dict[str, str]]


@dataclass(frozen=True)
class ExampleLoss:
    nll: float  # summed over the answer's tokens (natural log)
    tokens: int

    @property
    def mean(self) -> float:
        return self.nll / self.tokens if self.tokens else float("nan")


def answer_token_ids(tokenizer: Any, messages: ChatMessages) -> tuple[list[int], int]:
    """Token ids of the whole conversation and where its final assistant answer starts.

    The answer is what the full rendering adds after the prompt rendered with the generation
    prompt — the same split the inference engine and the trainer use."""
    full = tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=True)
    prompt = tokenizer.apply_chat_template(
        list(messages[:-1]), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    full_ids, prompt_ids = list(full["input_ids"]), list(prompt["input_ids"])
    start = 0
    for x, y in zip(full_ids, prompt_ids, strict=False):
        if x != y:
            break
        start += 1
    return full_ids, start


def example_losses(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[ChatMessages],
    *,
    batch_size: int = 8,
    max_length: int | None = 2048,
    progress: Callable[[int], None] | None = None,
) -> list[ExampleLoss]:
    """NLL of each conversation's last (assistant) message given everything before it."""
    import torch

    for conv in conversations:
        if not conv or conv[-1].get("role") != "assistant":
            raise ValueError("each conversation must end with an assistant message")
    encoded = [answer_token_ids(tokenizer, conv) for conv in conversations]
    if max_length:
        # Keep the answer: cut from the left when a conversation is too long.
        cut = []
        for ids, start in encoded:
            drop = max(0, len(ids) - max_length)
            cut.append((ids[drop:], max(0, start - drop)))
        encoded = cut
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    results: dict[int, ExampleLoss] = {}
    was_training = model.training
    model.eval()
    try:
        for begin in range(0, len(order), max(1, batch_size)):
            idx = order[begin : begin + batch_size]
            width = max(len(encoded[i][0]) for i in idx)
            # Left padding puts every answer at the right edge, so the LM head (a fifth of a
            # small model's compute) only runs on the last `keep` positions.
            keep = max(len(encoded[i][0]) - encoded[i][1] for i in idx) + 1
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            labels = torch.full((len(idx), width), -100, dtype=torch.long)
            for row, i in enumerate(idx):
                seq, start = encoded[i]
                off = width - len(seq)
                ids[row, off:] = torch.tensor(seq)
                mask[row, off:] = 1
                labels[row, off + start :] = torch.tensor(seq[start:])
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
            valid = target != -100
            picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            nll = -(picked * valid).sum(dim=1)
            counts = valid.sum(dim=1)
            for row, i in enumerate(idx):
                results[i] = ExampleLoss(float(nll[row]), int(counts[row]))
            if progress is not None:
                progress(len(idx))
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
