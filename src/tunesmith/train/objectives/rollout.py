"""Sampling completions from the policy being trained: GRPO's rollout, batched, with a KV cache.

Why our own loop instead of `model.generate`: the rollout must be seeded by its own
`torch.Generator` (the step's, so a resumed run samples what an uninterrupted one would, and
nothing else's random stream moves), must hand back token ids (the training rows are the
prompt ids + the sampled ids, never a decode/re-encode round trip that could change them), and
is most of a GRPO step's time, so it does only what is needed: one prefill over the left-padded
prompts, then one token per step for every unfinished sequence, the LM head on the last
position only, and sequences that finished dropped from the batch (and from the cache) as they
finish, so a batch costs what its longest *unfinished* completion costs.

It runs the training model itself (peft-wrapped, adapters on, fused LoRA layers included) in
eval mode under `torch.no_grad()`: no second copy of the weights, and exactly the policy the
gradient is taken for. The per-example attention of packed training rows is switched back to
stock attention for the duration (a KV cache is not a packed row).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

# Sequences generated together: prefill and decode cost grow with it; on a CPU a few dozen
# keep the matrix products efficient without holding more than a few MB of cache.
MAX_BATCH = 64


@contextlib.contextmanager
def sampling_mode(model: Any) -> Iterator[None]:
    """Eval mode (no dropout), no autograd, stock attention; restored afterwards."""
    from tunesmith.train.attention import NAME, restore_stock_attention, use_packed_attention

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    packed = getattr(base.config, "_attn_implementation", None) == NAME
    was_training = model.training
    if packed:
        restore_stock_attention(model)
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()
        if packed:
            use_packed_attention(model)


def _filter(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Probabilities to sample from: temperature, then nucleus (top-p) truncation."""
    logits = logits.float() / temperature
    probs = torch.softmax(logits, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_p, idx = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass of the tokens ranked above each one
    sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)  # keeps at least the top token
    return torch.zeros_like(probs).scatter_(-1, idx, sorted_p)


def _cache_select(cache: Any, keep: torch.Tensor) -> Any:
    """The KV cache of the sequences in `keep` (row indices), in place."""
    cache.batch_select_indices(keep)
    return cache


def sample(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int | Sequence[int],
    temperature: float,
    top_p: float,
    stop_ids: Sequence[int],
    pad_id: int,
    generator: torch.Generator | None = None,
    max_batch: int = MAX_BATCH,
) -> list[list[int]]:
    """One sampled completion per prompt (token ids, ending with the stop token when one was
    sampled within `max_new_tokens`; a per-prompt list of caps is allowed). Greedy when
    `temperature` is 0. The caller puts the model in `sampling_mode`."""
    caps = (
        [int(max_new_tokens)] * len(prompts)
        if isinstance(max_new_tokens, int)
        else [int(c) for c in max_new_tokens]
    )
    out: list[list[int]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding
    for start in range(0, len(order), max(1, max_batch)):
        idx = order[start : start + max_batch]
        done = _sample_batch(
            model,
            [prompts[i] for i in idx],
            [caps[i] for i in idx],
            temperature=temperature,
            top_p=top_p,
            stop_ids=stop_ids,
            pad_id=pad_id,
            generator=generator,
        )
        for i, ids in zip(idx, done, strict=True):
            out[i] = ids
    return out


def _sample_batch(
    model: Any,
    prompts: Sequence[Sequence[int]],
    caps: Sequence[int],
    *,
    temperature: float,
    top_p: float,
    stop_ids: Sequence[int],
    pad_id: int,
    generator: torch.Generator | None,
) -> list[list[int]]:
    device = next(model.parameters()).device
    n, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[row, width - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    cap = torch.tensor(list(caps), dtype=torch.long, device=device)
    live = torch.arange(n, device=device)  # original row of each sequence still generating
    results: list[list[int]] = [[] for _ in range(n)]
    from transformers import DynamicCache

    from tunesmith.inference.batch import cache_kwarg

    cache = DynamicCache()  # filled in place by every forward
    name = cache_kwarg(model)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position,
        use_cache=True,
        logits_to_keep=1,
        **{name: cache},
    )
    last_pos = position[:, -1]
    for t in range(int(cap.max().item())):
        logits = out.logits[:, -1, :]
        if temperature > 0:
            probs = _filter(logits, temperature, top_p)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        else:
            token = logits.argmax(dim=-1)
        for row, tok in zip(live.tolist(), token.tolist(), strict=True):
            results[row].append(tok)
        finished = torch.isin(token, stops) | (cap[live] <= t + 1)
        if bool(finished.all()):
            break
        if bool(finished.any()):
            keep = (~finished).nonzero().squeeze(-1)
            live, token, mask, last_pos = live[keep], token[keep], mask[keep], last_pos[keep]
            cache = _cache_select(cache, keep)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        last_pos = last_pos + 1
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=last_pos[:, None],
            use_cache=True,
            logits_to_keep=1,
            **{name: cache},
        )
    return results
