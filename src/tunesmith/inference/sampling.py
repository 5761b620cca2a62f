"""Choosing each row's next token: greedy, or temperature + top-p with the request's own seed.

Every request in a batch keeps its own sampling settings and its own random generator, so a
seeded request draws the same tokens whichever requests it shares a batch with. Greedy rows
take one argmax over the whole batch; only sampling rows cost a softmax each.
"""

from __future__ import annotations

import secrets
from typing import Any


class Sampler:
    def __init__(self, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None):
        self.temperature = float(temperature or 0.0)
        self.top_p = float(top_p if top_p is not None else 1.0)
        self.seed = seed if seed is not None else secrets.randbelow(2**63)
        self._generator: Any = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def _gen(self, device: Any) -> Any:
        import torch

        if self._generator is None:  # made on first use, on the logits' device
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def pick(self, logits: Any) -> int:
        """The next token from one row of logits (shape [vocab])."""
        import torch

        if self.greedy:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            # keep the smallest prefix whose mass reaches top_p (the top token always stays)
            keep = (torch.cumsum(sorted_p, dim=-1) - sorted_p) < self.top_p
            sorted_p = sorted_p * keep
            choice = torch.multinomial(sorted_p, 1, generator=self._gen(probs.device))
            return int(order[choice])
        return int(torch.multinomial(probs, 1, generator=self._gen(probs.device)))


def pick_all(samplers: list[Sampler], logits: Any) -> list[int]:
    """Next tokens for a batch (logits [rows, vocab]): one argmax for all greedy rows."""
    import torch

    greedy = torch.argmax(logits, dim=-1).tolist() if any(s.greedy for s in samplers) else []
    return [greedy[i] if s.greedy else s.pick(logits[i]) for i, s in enumerate(samplers)]
