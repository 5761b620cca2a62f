"""Loss functions for the loop. SFT here; DPO and GRPO plug in beside it.

Why not `model(input_ids, labels=...)`: that materialises logits for every position
(`batch x seq x vocab`, 49k wide for the default model) and only then masks most of them away.
With assistant-only loss most positions carry no loss, so we run the decoder, keep the hidden
states of positions whose (shifted) label is trained, and apply the LM head to those alone.
On a CPU that is a large share of the step time and memory.

The module goes *through* the peft-wrapped submodules (decoder layers and LM head of the
base model that peft injected its adapters into), so LoRA/DoRA still apply. It is an
`nn.Module` so DDP/FSDP can wrap it and see a real forward call.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


def causal_lm_parts(model: Any) -> tuple[nn.Module, nn.Module, float | None]:
    """(decoder, lm_head, logit softcap) of a causal LM, peft-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    if decoder is None:
        decoder = getattr(base, "model", None)
    head = base.get_output_embeddings()
    if decoder is None or head is None:
        raise TypeError(f"{type(base).__name__} has no decoder / output embedding to train")
    softcap = getattr(base.config, "final_logit_softcapping", None)
    return decoder, head, softcap


class SFTLoss(nn.Module):
    """Sum of token cross-entropies over trained positions, plus counts for the loop.

    forward(input_ids, position_ids, labels) -> (loss_sum, n_tokens, n_correct). The loop
    divides by the number of trained tokens in the whole optimizer step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        decoder, head, softcap = causal_lm_parts(self.model)
        out = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        targets = labels[:, 1:]
        mask = targets != IGNORE
        selected = hidden[:, :-1][mask]
        logits = head(selected)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        logits = logits.float()
        wanted = targets[mask]
        loss_sum = F.cross_entropy(logits, wanted, reduction="sum")
        with torch.no_grad():
            correct = (logits.argmax(dim=-1) == wanted).sum()
        return loss_sum, mask.sum(), correct


def count_trained(labels: torch.Tensor) -> int:
    """Trained positions after the causal shift (what SFTLoss sums over)."""
    return int((labels[:, 1:] != IGNORE).sum())
