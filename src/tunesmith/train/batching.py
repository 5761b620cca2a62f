"""From tokenized examples to the micro-batches of each optimizer step, deterministically.

Why this shape: resume must replay exactly the same batches, and N processes must together see
exactly what one process would at the same global batch. So the order of rows is a pure
function of (seed, epoch); optimizer step `s` of an epoch takes rows [s*G, (s+1)*G) of that
order (G = world x batch_size x grad_accum), and rank r takes every world-th of those.
A rank that runs out of rows in an epoch's last, short step gets an empty micro-batch (all
labels ignored) so every rank runs the same number of forward/backward passes (DDP needs it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tunesmith.data.tokenize import IGNORE_INDEX as IGNORE


@dataclass
class Row:
    """One sequence the model sees: a packed row or a single example."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels[1:] if x != IGNORE)


def blank_row(row: Row) -> Row:
    """`row` with no trained token: a micro-batch of it adds nothing to loss or gradient."""
    return Row(row.input_ids, [IGNORE] * len(row), row.position_ids)


def make_rows(examples: Sequence[Any], max_seq_len: int, *, packing: bool) -> list[Row]:
    """Rows for training: packed (best-fit, position ids restart per example) or one each."""
    if not examples:
        return []
    if packing:
        from tunesmith.data.packing import pack

        return [
            Row(list(r.input_ids), list(r.labels), list(r.position_ids))
            for r in pack(examples, max_seq_len)
        ]
    rows = []
    for ex in examples:
        ids = list(ex.input_ids)[:max_seq_len]
        rows.append(Row(ids, list(ex.labels)[: len(ids)], list(range(len(ids)))))
    return rows


def epoch_order(n_rows: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n_rows))
    random.Random(f"tunesmith-{seed}-{epoch}").shuffle(order)
    return order


def steps_per_epoch(n_rows: int, rows_per_step: int) -> int:
    return max(1, math.ceil(n_rows / max(1, rows_per_step)))


def step_micro_batches(
    rows: Sequence[Any],
    order: Sequence[int],
    step_in_epoch: int,
    *,
    batch_size: int,
    grad_accum: int,
    world_size: int = 1,
    rank: int = 0,
    blank: Callable[[Any], Any] | None = None,
) -> list[list[Any]]:
    """This rank's micro-batches for one optimizer step (equal count on every rank). A rank
    short of rows gets `blank(row)`: a row the objective counts as nothing."""
    per_step = batch_size * grad_accum * world_size
    chunk = [rows[i] for i in order[step_in_epoch * per_step : (step_in_epoch + 1) * per_step]]
    # Rank r takes rows r, r+world, ...: the global step is the same set of rows at any world.
    mine = chunk[rank::world_size]
    n_micro = max(1, math.ceil(math.ceil(len(chunk) / world_size) / batch_size))
    batches = [mine[i * batch_size : (i + 1) * batch_size] for i in range(n_micro)]
    filler = chunk[0] if chunk else rows[0]
    empty = (blank or blank_row)(filler)
    return [b if b else [empty] for b in batches]


def collate(rows: Sequence[Row], pad_id: int, device: Any) -> dict[str, Any]:
    """Tensors for one micro-batch. Shorter rows are padded at the end with ignored labels and
    continuing position ids (causal attention: real tokens never see the padding)."""
    import torch

    width = max(len(r) for r in rows)
    ids, labels, pos = [], [], []
    for r in rows:
        pad = width - len(r)
        ids.append(r.input_ids + [pad_id] * pad)
        labels.append(r.labels + [IGNORE] * pad)
        last = r.position_ids[-1] + 1 if r.position_ids else 0
        pos.append(r.position_ids + list(range(last, last + pad)))
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long, device=device),
        "labels": torch.tensor(labels, dtype=torch.long, device=device),
        "position_ids": torch.tensor(pos, dtype=torch.long, device=device),
    }
