"""Supervised fine-tuning: cross-entropy on the trained (assistant) tokens.

Why not `model(input_ids, labels=...)`: that materialises logits for every position
(`batch x seq x vocab`, 49k wide for the default model) and only then masks most of them away.
With assistant-only loss most positions carry no loss, so we run the decoder, keep the hidden
states of positions whose (shifted) label is trained, and apply the LM head to those alone.
On a CPU that is a large share of the step time and memory.

The loss module goes *through* the peft-wrapped submodules (decoder layers and LM head of the
base model that peft injected its adapters into), so LoRA/DoRA still apply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunesmith.data.tokenize import IGNORE_INDEX
from tunesmith.train.batching import Row, blank_row, collate
from tunesmith.train.objectives.base import causal_lm_parts


class SFTLoss(nn.Module):
    """Sum of token cross-entropies over trained positions, plus counts for the loop.

    forward(input_ids, position_ids, labels) -> {"loss": summed loss, "count": trained tokens,
    "correct": tokens whose argmax is the label}. The loop divides by the trained tokens of the
    whole optimizer step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        decoder, head, softcap = causal_lm_parts(self.model)
        out = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        targets = labels[:, 1:]
        mask = targets != IGNORE_INDEX
        selected = hidden[:, :-1][mask]
        logits = head(selected)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        logits = logits.float()
        wanted = targets[mask]
        loss_sum = F.cross_entropy(logits, wanted, reduction="sum")
        with torch.no_grad():
            correct = (logits.argmax(dim=-1) == wanted).sum()
        return {"loss": loss_sum, "count": mask.sum(), "correct": correct}


def count_trained(labels: torch.Tensor) -> int:
    """Trained positions after the causal shift (what SFTLoss sums over)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


class SupervisedObjective:
    """SFT behind the objective protocol (see objectives/base.py)."""

    name = "supervised"
    unit = "tokens"

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def loss_module(self, model: nn.Module) -> nn.Module:
        return SFTLoss(model)

    def collate(self, rows: Sequence[Row], device: Any) -> dict[str, Any]:
        return collate(rows, self.pad_id, device)

    def blank(self, row: Row) -> Row:
        return blank_row(row)

    def count(self, batch: dict[str, Any]) -> int:
        return count_trained(batch["labels"])

    def step_metrics(self, sums: dict[str, float], units: int) -> dict[str, float]:
        return {"token_accuracy": sums.get("correct", 0.0) / max(1, units)}

    def validation_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(1.0, sums.get("count", 0.0))
        val_loss = sums["loss"] / n
        return {
            "val_loss": val_loss,
            "val_perplexity": math.exp(min(val_loss, 50.0)),
            "val_token_accuracy": sums.get("correct", 0.0) / n,
            "val_tokens": int(sums.get("count", 0.0)),
        }

    def rollout(self, ctx: Any, micro: list[list[Row]]) -> list[list[Row]]:
        return micro
