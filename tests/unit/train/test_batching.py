"""Batches are a pure function of (seed, epoch, step): resume and N processes see the same."""

from __future__ import annotations

import torch

from tunesmith.train.batching import Row, collate, epoch_order, step_micro_batches


def _rows(n: int) -> list[Row]:
    return [Row([i] * (3 + i % 4), [i] * (3 + i % 4), list(range(3 + i % 4))) for i in range(n)]


def test_epoch_order_is_deterministic_and_changes_per_epoch():
    assert epoch_order(20, 0, 0) == epoch_order(20, 0, 0)
    assert sorted(epoch_order(20, 0, 1)) == list(range(20))
    assert epoch_order(20, 0, 0) != epoch_order(20, 0, 1)
    assert epoch_order(20, 0, 0) != epoch_order(20, 1, 0)


def test_ranks_split_exactly_the_rows_of_one_process():
    rows = _rows(11)
    order = epoch_order(11, 3, 0)
    for step in range(3):  # 4 rows per step; the last step is short (3 rows)
        single = step_micro_batches(rows, order, step, batch_size=1, grad_accum=4)
        r0 = step_micro_batches(rows, order, step, batch_size=1, grad_accum=2, world_size=2, rank=0)
        r1 = step_micro_batches(rows, order, step, batch_size=1, grad_accum=2, world_size=2, rank=1)
        assert len(r0) == len(r1)  # DDP: same number of forward/backward passes
        ids = lambda mbs: sorted(r.input_ids[0] for mb in mbs for r in mb if r.n_trained)  # noqa: E731
        assert ids(r0) + ids(r1) and sorted(ids(r0) + ids(r1)) == ids(single)


def test_short_last_step_gives_empty_micro_batch_with_no_trained_tokens():
    rows = _rows(3)
    mbs = step_micro_batches(rows, [0, 1, 2], 0, batch_size=1, grad_accum=2, world_size=2, rank=1)
    assert len(mbs) == 2
    assert mbs[0][0].n_trained > 0 and mbs[1][0].n_trained == 0


def test_collate_pads_with_ignored_labels_and_continuing_positions():
    rows = [Row([5, 6, 7], [-100, 6, 7], [0, 1, 0]), Row([8], [8], [0])]
    b = collate(rows, pad_id=0, device="cpu")
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert b["position_ids"].tolist() == [[0, 1, 0], [0, 1, 2]]
    assert b["input_ids"].dtype == torch.long
