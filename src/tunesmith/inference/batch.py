"""The rows one model generates together: a shared KV cache, left padding and per-row positions.

Why these rules, which keep a row's greedy answer the same alone or in any batch:
- Prompts are padded on the left, so every row's newest token is the last column and one
  `logits_to_keep=1` forward serves all rows.
- The 2-D attention mask covers the whole cache; padding is masked out of every query.
- Position ids are each row's own (count of its real tokens so far), never the column index:
  a padded row must see the same rotary positions as it would alone.
Rows join between steps (`merge`: the shorter cache is padded on the left to the longer one's
width) and leave as soon as they finish (`select`), after which columns that are padding for
every remaining row are cut off again. Rows of one batch may each use another LoRA adapter,
one adapter name per row (`__base__` for none): through `mixed` (multi_lora.py, the fused
path) where it covers the model, else through peft's mixed-adapter inference.
"""

from __future__ import annotations

import inspect
from typing import Any

from tunesmith.inference.multi_lora import BASE  # "no adapter" (peft's name for it too)

__all__ = ["BASE", "Batch", "cache_kwarg"]


def _inner(model: Any) -> Any:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def cache_kwarg(model: Any) -> str:
    """transformers >= 5.? calls the KV cache `cache`; earlier versions `past_key_values`."""
    params = inspect.signature(_inner(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class Batch:
    """Running rows of one model. Each call takes the model to run: the first adapter loaded
    on a base wraps it in a peft model between two steps, and from then on every row (base rows
    too, as `__base__`) must go through that wrapper."""

    def __init__(self, model: Any, *, cache_name: str | None = None, pad_id: int = 0):
        import torch

        self.cache_name = cache_name or cache_kwarg(model)
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self.cache: Any = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self.positions = torch.zeros((0,), dtype=torch.long, device=self.device)
        self.adapters: list[str] = []

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    def _forward(
        self, model: Any, mixed: Any, input_ids: Any, position_ids: Any, **extra: Any
    ) -> Any:
        kwargs: dict[str, Any] = {self.cache_name: self.cache, "use_cache": True, **extra}
        if mixed is not None and mixed.active:  # our fused mixed-adapter path (multi_lora.py)
            mixed.prepare(self.adapters)
        elif hasattr(model, "peft_config"):  # peft's own mixed-adapter inference
            kwargs["adapter_names"] = list(self.adapters)
        out = model(
            input_ids=input_ids, attention_mask=self.mask, position_ids=position_ids, **kwargs
        )
        return out.logits[:, -1, :]

    def prefill(
        self, model: Any, prompts: list[list[int]], adapters: list[str], mixed: Any = None
    ) -> Any:
        """Start this (empty) batch with `prompts`; returns the logits of each row's next token."""
        import torch
        from transformers import DynamicCache

        assert len(self) == 0 and prompts
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p) :] = 1
        self.mask = mask.to(self.device)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self.positions = positions[:, -1] + 1
        self.adapters = list(adapters)
        self.cache = DynamicCache()  # full-length layers only: rows can be merged and dropped
        return self._forward(model, mixed, ids.to(self.device), positions, logits_to_keep=1)

    def step(self, model: Any, tokens: list[int], mixed: Any = None) -> Any:
        """Feed each row its newest token; returns the logits of the token after it."""
        import torch

        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None]
        ones = torch.ones((len(self), 1), dtype=torch.long, device=self.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        logits = self._forward(model, mixed, ids, self.positions[:, None])
        self.positions = self.positions + 1
        return logits

    def merge(self, other: Batch) -> None:
        """Append `other`'s rows after this batch's, padding the narrower cache on the left."""
        import torch
        import torch.nn.functional as F

        if len(other) == 0:
            return
        if len(self) == 0:
            self.cache, self.mask, self.positions = other.cache, other.mask, other.positions
            self.adapters = list(other.adapters)
            return
        width = max(self.mask.shape[1], other.mask.shape[1])

        def widen(t: Any, have: int, dim_from_end: int) -> Any:
            pad = [0, 0] * dim_from_end  # F.pad lists (left, right) from the last dimension
            pad[2 * (dim_from_end - 1)] = width - have
            return F.pad(t, pad) if width > have else t

        a_w, b_w = self.mask.shape[1], other.mask.shape[1]
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([widen(mine.keys, a_w, 2), widen(theirs.keys, b_w, 2)])
            mine.values = torch.cat([widen(mine.values, a_w, 2), widen(theirs.values, b_w, 2)])
        self.mask = torch.cat([widen(self.mask, a_w, 1), widen(other.mask, b_w, 1)])
        self.positions = torch.cat([self.positions, other.positions])
        self.adapters += other.adapters

    def select(self, keep: list[int]) -> None:
        """Keep only rows `keep` (in that order); trims columns no remaining row attends to."""
        import torch

        if len(keep) == len(self):
            return
        if not keep:
            self.cache = None
            self.mask = self.mask[:0, :0]
            self.positions = self.positions[:0]
            self.adapters = []
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.mask = self.mask.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        self.adapters = [self.adapters[i] for i in keep]
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:, :]
            layer.values = layer.values.index_select(0, index)[:, :, start:, :]
