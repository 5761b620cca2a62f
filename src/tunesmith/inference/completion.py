"""One completion with what a serving API reports: the text, token counts and why it stopped.

`complete` continues token ids (a chat prompt rendered by `prompt_ids`, or raw text for the
completions API) and cuts the text at the first stop string; `stream_complete` yields the same
text piece by piece and ends with the counts. Stop strings are honoured across piece borders:
text that could still become a stop string is held back until it cannot.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tunesmith.inference.engine import GenerationSettings, _gen_kwargs


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop string) | "length" (max tokens)


def _cut(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def _stop_kwargs(kwargs: dict[str, Any], tokenizer: Any, stop: Sequence[str]) -> dict[str, Any]:
    """Let generation itself end at a stop string (transformers checks the decoded tail)."""
    stops = [s for s in stop if s]
    if stops:
        kwargs.update(stop_strings=stops, tokenizer=tokenizer)
    return kwargs


def complete(
    model: Any, tokenizer: Any, ids: list[int], settings: GenerationSettings, stop: Sequence[str]
) -> Completion:
    import torch

    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    device = next(model.parameters()).device
    kwargs = _stop_kwargs(_gen_kwargs(model, tokenizer, settings), tokenizer, stop)
    ends = set(kwargs["eos_token_id"])
    input_ids = torch.tensor([ids], device=device)
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs
        )
    new = out[0, len(ids) :].tolist()
    cut = next((k for k, t in enumerate(new) if t in ends), None)
    ended = cut is not None
    tokens = new[:cut] if cut is not None else new
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    text, stopped = _cut(text, stop)
    reason = "stop" if ended or stopped or len(new) < settings.max_new_tokens else "length"
    return Completion(text, len(ids), len(tokens), reason)


def stream_complete(
    model: Any, tokenizer: Any, ids: list[int], settings: GenerationSettings, stop: Sequence[str]
) -> Iterator[str | Completion]:
    """Text pieces, then one final `Completion` (its text is the whole reply)."""
    import torch
    from transformers import TextIteratorStreamer

    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = _stop_kwargs(_gen_kwargs(model, tokenizer, settings), tokenizer, stop)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            with torch.no_grad():
                result["out"] = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    streamer=streamer,
                    **kwargs,
                )
        except BaseException as exc:  # surfaced to the caller below
            result["error"] = exc
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    sent, pending, stopped = "", "", False
    longest = max((len(s) for s in stop if s), default=0)
    for piece in streamer:
        if stopped:
            continue  # generation stops at the stop string too; drain what is left
        pending += piece
        pending, stopped = _cut(pending, stop)
        keep = 0 if stopped else min(len(pending), max(0, longest - 1))
        ready = pending[: len(pending) - keep]
        if ready:
            sent += ready
            yield ready
        pending = pending[len(pending) - keep :] if keep else ""
    thread.join()
    if "error" in result:
        raise result["error"]
    if pending and not stopped:
        sent += pending
        yield pending
    ends = set(kwargs["eos_token_id"])
    new = result["out"][0, len(ids) :].tolist()
    cut = next((k for k, t in enumerate(new) if t in ends), None)
    n = cut if cut is not None else len(new)
    reason = (
        "stop" if stopped or cut is not None or len(new) < settings.max_new_tokens else "length"
    )
    yield Completion(sent, len(ids), n, reason)
