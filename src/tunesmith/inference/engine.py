"""Inference: render conversations through the model's own chat template and generate.

This is the one place prompts are turned into token ids for generation, so training (which
renders prompts the same way, see `tunesmith.data.tokenize`), evaluation, chat and export all
see identical tokens. Batched generation pads on the left; greedy unless a temperature is set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tunesmith import events
from tunesmith.auto import EVAL_BATCH_ROWS, EVAL_BATCH_TOKENS
from tunesmith.events import Reporter
from tunesmith.models.load import stop_token_ids

ChatMessages = Sequence[dict[str, str]]


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = 0
    batch_size: int = EVAL_BATCH_ROWS  # prompts per batch, at most
    batch_tokens: int = EVAL_BATCH_TOKENS  # rows x (prompt + max_new_tokens), at most


def batches(lengths: Sequence[int], rows: int, tokens: int, new_tokens: int) -> list[list[int]]:
    """Indices of prompts grouped for batched generation, shortest first (little padding):
    at most `rows` prompts and `tokens` tokens (rows x (longest prompt + new tokens)) each; a
    prompt longer than the budget goes alone."""
    out: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda k: lengths[k]):
        group = out[-1] if out else None
        width = lengths[i] + new_tokens  # the longest so far: prompts come shortest first
        if group is None or len(group) >= max(1, rows) or (len(group) + 1) * width > tokens:
            out.append([i])
        else:
            group.append(i)
    return out


def prompt_ids(tokenizer: Any, messages: ChatMessages) -> list[int]:
    """Token ids of `messages` rendered with the generation prompt (what the model continues)."""
    out = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(out["input_ids"])


def _gen_kwargs(model: Any, tokenizer: Any, settings: GenerationSettings) -> dict[str, Any]:
    stops = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "eos_token_id": stops,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if settings.temperature and settings.temperature > 0:
        kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def generate(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[ChatMessages],
    settings: GenerationSettings | None = None,
    *,
    on_event: Reporter | None = None,
    phase: str = "generate",
    text: str = "",
) -> list[str]:
    """Answer each conversation; returns the decoded assistant replies, in order.

    Reports `progress` events of `phase` (conversations answered of all) after each batch."""
    import torch

    settings = settings or GenerationSettings()
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    device = next(model.parameters()).device
    kwargs = _gen_kwargs(model, tokenizer, settings)
    stops = set(kwargs["eos_token_id"])
    pad = tokenizer.pad_token_id
    encoded = [prompt_ids(tokenizer, conv) for conv in conversations]
    groups = batches(
        [len(e) for e in encoded], settings.batch_size, settings.batch_tokens,
        settings.max_new_tokens,
    )  # fmt: skip
    replies: dict[int, str] = {}
    report = events.reporter(on_event)
    report(events.progress(phase, 0, len(encoded), text))
    for idx in groups:
        width = max(len(encoded[i]) for i in idx)
        input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
        attention = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids = encoded[i]
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs
            )
        for row, i in enumerate(idx):
            new = out[row, width:].tolist()
            cut = next((k for k, t in enumerate(new) if t in stops), len(new))
            replies[i] = tokenizer.decode(new[:cut], skip_special_tokens=True).strip()
        report(events.progress(phase, len(replies), len(encoded), text))
    return [replies[i] for i in range(len(encoded))]


def stream(
    model: Any,
    tokenizer: Any,
    messages: ChatMessages,
    settings: GenerationSettings | None = None,
) -> Iterator[str]:
    """Yield the reply to one conversation piece by piece as it is generated."""
    import torch
    from transformers import TextIteratorStreamer

    settings = settings or GenerationSettings()
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids(tokenizer, messages)], device=device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = _gen_kwargs(model, tokenizer, settings)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with torch.no_grad():
                model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer, **kwargs
                )
        except BaseException as exc:  # surfaced to the caller below
            errors.append(exc)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield from streamer
    thread.join()
    if errors:
        raise errors[0]
