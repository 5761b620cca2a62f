"""Per-request sampling: greedy is argmax, a seed gives the same draws in any batch."""

from __future__ import annotations

import torch

from tunesmith.inference.sampling import Sampler, pick_all


def test_greedy_rows_take_the_argmax() -> None:
    logits = torch.tensor([[0.1, 2.0, 0.3], [5.0, 1.0, 0.0]])
    assert pick_all([Sampler(0.0), Sampler(0.0)], logits) == [1, 0]


def test_a_seeded_row_draws_the_same_tokens_whatever_its_neighbours() -> None:
    torch.manual_seed(0)
    rows = torch.randn(20, 3, 50)  # 20 steps, 3 rows, vocab 50
    alone = Sampler(1.0, 0.9, seed=7)
    batched = [Sampler(0.0), Sampler(1.0, 0.9, seed=7), Sampler(0.7, seed=1)]
    mine = [alone.pick(step[1]) for step in rows]
    assert [pick_all(batched, step)[1] for step in rows] == mine
    assert len(set(mine)) > 3  # it did sample


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = torch.log(torch.tensor([0.6, 0.3, 0.05, 0.05]))
    picks = {Sampler(1.0, 0.5, seed=s).pick(logits) for s in range(30)}
    assert picks == {0}
    picks = {Sampler(1.0, 0.85, seed=s).pick(logits) for s in range(60)}
    assert picks == {0, 1}
