"""Direct preference optimisation (DPO, and IPO's loss) on chosen / rejected pairs.

Per pair, with summed completion log-probs of the policy (pi) and the reference (ref):

    h = (pi(chosen) - ref(chosen)) - (pi(rejected) - ref(rejected))
    sigmoid:  -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)     (eps: label_smoothing)
    ipo:      (h' - 1 / (2 beta))^2, h' the same with per-token mean log-probs (as trl does)

The implicit rewards are beta (pi - ref) of each answer: their mean, margin and how often the
chosen one wins (preference accuracy) are the step's statistics, summed over real pairs.
The reference log-probs come from one pass before the first step (reference.py), so a step is
one forward and backward of the policy over both answers (preference.py), nothing more.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunesmith.train.objectives.preference import PairObjective, completion_logps, split_pairs


class DPOLoss(nn.Module):
    """forward(input_ids, position_ids, labels, ref_logps) -> {"loss": summed pair losses,
    "count": real pairs, "rewards_chosen", "rewards_rejected", "margin", "correct"} (sums)."""

    def __init__(self, model: nn.Module, *, beta: float, label_smoothing: float, loss: str):
        super().__init__()
        self.model = model
        self.beta = beta
        self.label_smoothing = label_smoothing
        self.loss_type = loss

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        labels: torch.Tensor,
        ref_logps: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        logps, n_tokens = completion_logps(self.model, input_ids, position_ids, labels)
        n_c, n_r = split_pairs(n_tokens)
        real = ((n_c > 0) & (n_r > 0)).float()
        pi_c, pi_r = split_pairs(logps)
        ref_c, ref_r = split_pairs(ref_logps.float())
        ratio_c, ratio_r = pi_c - ref_c, pi_r - ref_r
        if self.loss_type == "ipo":
            h = ratio_c / n_c.clamp(min=1) - ratio_r / n_r.clamp(min=1)
            losses = (h - 1.0 / (2.0 * self.beta)) ** 2
        else:
            z = self.beta * (ratio_c - ratio_r)
            eps = self.label_smoothing
            losses = -(1.0 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
        with torch.no_grad():
            reward_c = self.beta * ratio_c.detach() * real
            reward_r = self.beta * ratio_r.detach() * real
            correct = ((reward_c > reward_r).float() * real).sum()
        return {
            "loss": (losses * real).sum(),
            "count": real.sum(),
            "rewards_chosen": reward_c.sum(),
            "rewards_rejected": reward_r.sum(),
            "margin": (reward_c - reward_r).sum(),
            "correct": correct,
        }


class DPOObjective(PairObjective):
    """DPO behind the objective protocol (objectives/base.py); unit = pairs."""

    name = "dpo"

    def __init__(self, pad_id: int, options: Any):
        super().__init__(pad_id)
        self.options = options

    def loss_module(self, model: nn.Module) -> nn.Module:
        o = self.options
        return DPOLoss(model, beta=o.beta, label_smoothing=o.label_smoothing, loss=o.loss)

    def prepare(self, ctx: Any) -> None:
        """Before the first step (and before a resume restores its checkpoint): every row's
        reference log-probs, from the cache or one pass over the initial policy."""
        from tunesmith.train.objectives.reference import attach

        attach(ctx, self.pad_id, use_cache=self.options.cache_reference)
