"""ORPO: odds-ratio preference optimisation, reference-free (Hong et al., 2024).

Per pair, with the per-token mean log-probs m_c, m_r of the chosen and rejected answer:

    odds(y)   = P(y) / (1 - P(y)),  P(y) = exp(m)
    loss      = -m_c  +  beta * -log sigmoid(log odds(chosen) - log odds(rejected))

The first term is SFT on the chosen answer (per-token mean, as in the paper); the second pushes
the odds of the chosen answer above the rejected one's. No reference model and no reference
pass: one forward over both answers per micro-batch (preference.py), like DPO. The rewards
reported are beta x m (trl's convention), their margin, and how often the chosen one wins.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunesmith.train.objectives.preference import PairObjective, completion_logps, split_pairs


def log1m_exp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable near 0 (a mean log-prob of ~0: P(y) ~ 1)."""
    return torch.log(-torch.expm1(x.clamp(max=-1e-6)))


class ORPOLoss(nn.Module):
    """forward(input_ids, position_ids, labels, ref_logps) -> {"loss": summed pair losses,
    "count": real pairs, "nll", "log_odds", "rewards_chosen", "rewards_rejected", "margin",
    "correct"} (sums). `ref_logps` is ignored: ORPO has no reference."""

    def __init__(self, model: nn.Module, *, beta: float):
        super().__init__()
        self.model = model
        self.beta = beta

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        labels: torch.Tensor,
        ref_logps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        logps, n_tokens = completion_logps(self.model, input_ids, position_ids, labels)
        n_c, n_r = split_pairs(n_tokens)
        real = ((n_c > 0) & (n_r > 0)).float()
        sum_c, sum_r = split_pairs(logps)
        m_c, m_r = sum_c / n_c.clamp(min=1), sum_r / n_r.clamp(min=1)
        log_odds = (m_c - m_r) - (log1m_exp(m_c) - log1m_exp(m_r))
        nll = -m_c
        losses = nll - self.beta * F.logsigmoid(log_odds)
        with torch.no_grad():
            reward_c, reward_r = self.beta * m_c.detach() * real, self.beta * m_r.detach() * real
        return {
            "loss": (losses * real).sum(),
            "count": real.sum(),
            "nll": (nll.detach() * real).sum(),
            "log_odds": (log_odds.detach() * real).sum(),
            "rewards_chosen": reward_c.sum(),
            "rewards_rejected": reward_r.sum(),
            "margin": (reward_c - reward_r).sum(),
            "correct": ((reward_c > reward_r).float() * real).sum(),
        }


class ORPOObjective(PairObjective):
    """ORPO behind the objective protocol (objectives/base.py); unit = pairs."""

    name = "orpo"

    def __init__(self, pad_id: int, options: Any):
        super().__init__(pad_id)
        self.options = options

    def loss_module(self, model: nn.Module) -> nn.Module:
        return ORPOLoss(model, beta=self.options.beta)

    def step_metrics(self, sums: dict[str, float], units: int) -> dict[str, float]:
        out = super().step_metrics(sums, units)
        n = max(1, units)
        out["nll_loss"] = sums.get("nll", 0.0) / n
        out["log_odds_ratio"] = sums.get("log_odds", 0.0) / n
        return out

    def validation_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        out = super().validation_metrics(sums)
        n = max(1.0, sums.get("count", 0.0))
        out["val_nll_loss"] = sums.get("nll", 0.0) / n
        out["val_log_odds_ratio"] = sums.get("log_odds", 0.0) / n
        return out
