"""What the loop needs from a training objective, and nothing more.

The loop (train/loop.py) runs the same numbered steps for every method; an objective says
  - what a step counts (`unit`: trained tokens for SFT, pairs for DPO, completions for GRPO)
    and how many of them a micro-batch holds (`count`), so a step's gradient is the mean over
    its units however the rows were split across micro-batches and ranks;
  - the loss module (`loss_module`): an `nn.Module` (so DDP/FSDP can wrap it) whose
    `forward(**batch)` returns summable tensors: "loss" (the SUM over the batch's units) plus
    statistics ("count", "correct", ...) that the loop adds up over micro-batches and ranks;
  - how rows become tensors (`collate`) and what an empty micro-batch looks like (`blank`,
    for a rank that runs out of rows in an epoch's last step);
  - what the summed statistics mean for a training step (`step_metrics`) and for validation
    (`validation_metrics`, which must contain `val_loss`);
  - optionally, a rollout before the forward passes (`rollout`: GRPO samples completions there);
  - optionally (not part of the Protocol: run.py looks for it), `prepare(ctx)`: work done once
    with the initial weights, before the first step and before a resume restores a checkpoint
    (DPO's reference log-probs, objectives/reference.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from tunesmith.data.tokenize import IGNORE_INDEX


class Objective(Protocol):
    name: str  # the spec's method.type ("supervised", ...)
    unit: str  # what a step's loss is averaged over ("tokens", "pairs", "completions")

    def loss_module(self, model: nn.Module) -> nn.Module: ...

    def collate(self, rows: Sequence[Any], device: Any) -> dict[str, Any]: ...

    def blank(self, row: Any) -> Any: ...

    def count(self, batch: dict[str, Any]) -> int: ...

    def step_metrics(self, sums: dict[str, float], units: int) -> dict[str, float]: ...

    def validation_metrics(self, sums: dict[str, float]) -> dict[str, float]: ...

    def rollout(self, ctx: Any, micro: list[list[Any]]) -> list[list[Any]]: ...


def causal_lm_parts(model: Any) -> tuple[nn.Module, nn.Module, float | None]:
    """(decoder, lm_head, logit softcap) of a causal LM, peft-wrapped or not. Objectives run
    the decoder and apply the LM head only where they need logits."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    if decoder is None:
        decoder = getattr(base, "model", None)
    head = base.get_output_embeddings()
    if decoder is None or head is None:
        raise TypeError(f"{type(base).__name__} has no decoder / output embedding to train")
    softcap = getattr(base.config, "final_logit_softcapping", None)
    return decoder, head, softcap


def token_logps(
    model: nn.Module,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of every trained token, in row-major order, float32; its row), under the
    distribution the rollout sampled from (logits / `temperature`). The LM head runs on the
    trained positions only."""
    decoder, head, softcap = causal_lm_parts(model)
    out = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False)
    hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logits = head(hidden[:, :-1][mask])
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    wanted = targets[mask]
    logp = logits.gather(-1, wanted[:, None]).squeeze(-1) - torch.logsumexp(logits, -1)
    return logp, mask.nonzero()[:, 0]
