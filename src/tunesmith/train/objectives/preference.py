"""What DPO and ORPO share: pair rows, one batch for both answers, completion log-probs.

Why one batch: a pair's chosen and rejected answers go through the model in the same forward
pass (chosen rows first, then rejected rows, padded to one width), so a step costs one decoder
call per micro-batch, not two. Why only completion positions: a preference loss needs the
log-probability of the answer tokens alone; as in SFT (sft.py) the decoder runs on the whole
sequence, the hidden states of the answer positions are picked out, and only those go through
the LM head and log-softmax — never `batch x seq x vocab` logits.

Loss positions are the data layer's labels (`tokenize_preferences`, the SFT rule with
`train_on="last"`): the answer and its end-of-turn token. A row of a pair without any such
token (the blank a rank gets when it runs out of rows) counts as no pair at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tunesmith.data.tokenize import IGNORE_INDEX
from tunesmith.train.batching import Row, blank_row, collate
from tunesmith.train.objectives.base import token_logps


@dataclass
class PairRow:
    """One preference pair as the loop sees it: two sequences and (DPO) the reference model's
    summed completion log-probs of each, filled in once before the first step."""

    chosen: Row
    rejected: Row
    ref_chosen: float = 0.0
    ref_rejected: float = 0.0

    def __len__(self) -> int:
        return max(len(self.chosen), len(self.rejected))

    @property
    def is_blank(self) -> bool:
        return not (self.chosen.n_trained and self.rejected.n_trained)


def _row(ex: Any, max_seq_len: int) -> Row:
    ids = list(ex.input_ids)[:max_seq_len]
    return Row(ids, list(ex.labels)[: len(ids)], list(range(len(ids))))


def pair_rows(pairs: Sequence[Any], max_seq_len: int) -> list[PairRow]:
    """Rows of tokenized pairs (`TokenizedPair`), one per pair; never packed (a pair's two
    answers must stay whole sequences of their own)."""
    return [PairRow(_row(p.chosen, max_seq_len), _row(p.rejected, max_seq_len)) for p in pairs]


def blank_pair(row: PairRow) -> PairRow:
    """A pair with no trained token: it adds nothing to any loss, gradient or statistic."""
    return PairRow(blank_row(row.chosen), blank_row(row.rejected))


def collate_pairs(rows: Sequence[PairRow], pad_id: int, device: Any) -> dict[str, Any]:
    """One micro-batch: chosen sequences, then rejected ones, right-padded to one width
    (position ids continue into the padding; causal attention keeps real tokens from seeing
    it), plus the reference log-probs as a (2 x pairs) tensor in the same order."""
    batch = collate([r.chosen for r in rows] + [r.rejected for r in rows], pad_id, device)
    ref = [r.ref_chosen for r in rows] + [r.ref_rejected for r in rows]
    batch["ref_logps"] = torch.tensor(ref, dtype=torch.float32, device=device)
    return batch


def count_pairs(batch: dict[str, Any]) -> int:
    """Real pairs of a micro-batch (both answers have trained tokens)."""
    n = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1)
    half = n.shape[0] // 2
    return int(((n[:half] > 0) & (n[half:] > 0)).sum())


def completion_logps(
    model: nn.Module,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob of each sequence's trained tokens, their number), float32, shape (N,).
    The LM head runs on the trained positions only."""
    token_lp, seq = token_logps(model, input_ids, position_ids, labels)
    mask = labels[:, 1:] != IGNORE_INDEX
    sums = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    return sums.index_add(0, seq, token_lp), mask.sum(dim=1)


def split_pairs(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen half, rejected half) of a per-sequence tensor laid out as collate_pairs does."""
    half = values.shape[0] // 2
    return values[:half], values[half:]


class PairObjective:
    """The protocol parts DPO and ORPO share (see objectives/base.py): rows are pairs."""

    name = "preference"
    unit = "pairs"

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def collate(self, rows: Sequence[PairRow], device: Any) -> dict[str, Any]:
        return collate_pairs(rows, self.pad_id, device)

    def blank(self, row: PairRow) -> PairRow:
        return blank_pair(row)

    def count(self, batch: dict[str, Any]) -> int:
        return count_pairs(batch)

    def step_metrics(self, sums: dict[str, float], units: int) -> dict[str, float]:
        n = max(1, units)
        return {
            "rewards_chosen": sums.get("rewards_chosen", 0.0) / n,
            "rewards_rejected": sums.get("rewards_rejected", 0.0) / n,
            "reward_margin": sums.get("margin", 0.0) / n,
            "preference_accuracy": sums.get("correct", 0.0) / n,
        }

    def validation_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(1.0, sums.get("count", 0.0))
        return {
            "val_loss": sums["loss"] / n,
            "val_preference_accuracy": sums.get("correct", 0.0) / n,
            "val_reward_margin": sums.get("margin", 0.0) / n,
            "val_rewards_chosen": sums.get("rewards_chosen", 0.0) / n,
            "val_rewards_rejected": sums.get("rewards_rejected", 0.0) / n,
            "val_pairs": int(sums.get("count", 0.0)),
        }

    def rollout(self, ctx: Any, micro: list[list[PairRow]]) -> list[list[PairRow]]:
        return micro
