"""Packing: place tokenized examples into rows of `max_seq_len` tokens, best-fit decreasing.

Why: short examples padded to a long row waste most of the compute. Packing several examples
into one row recovers it, but other tools have silently broken two things when packing — loss
masks and attention between examples. Here:

- position ids restart at 0 for every example in a row. Run a packed row as
  `model(input_ids=..., position_ids=..., use_cache=False)` with NO attention mask: transformers
  (5.x, SDPA/eager) then detects the restarts and keeps attention inside each example, so each
  example gets the same logits as alone (tested to 1e-4 on the tiny model);
- labels are carried over unchanged, except that the first token of each example gets -100:
  its label would otherwise make the previous example's last position predict it (the causal
  shift crosses the boundary), a target that never exists when the example is alone.

Best-fit decreasing: examples sorted longest first (ties by input order, so packing is
deterministic) each go into the open row with the least room that still fits them.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from tunesmith.data.tokenize import IGNORE_INDEX, TokenizedExample
from tunesmith.errors import DataError


@dataclass
class PackedRow:
    """One training row: several examples back to back, positions restarting per example."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    lengths: list[int]  # lengths of the examples in this row, in order
    indices: list[int] = field(default_factory=list)  # their indices in the input sequence

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        return len(self.labels) - self.labels.count(IGNORE_INDEX)


def plan_bins(lengths: Sequence[int], max_seq_len: int) -> list[list[int]]:
    """Best-fit-decreasing assignment of item indices to bins of capacity `max_seq_len`."""
    if max_seq_len <= 0:
        raise ValueError("max_seq_len must be positive")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    # Open bins keyed by remaining room; (room, bin index) kept sorted for bisect.
    rooms: list[tuple[int, int]] = []
    for i in order:
        n = lengths[i]
        if n > max_seq_len:
            raise DataError(f"example {i} has {n} tokens, more than max_seq_len {max_seq_len}")
        if n <= 0:
            raise DataError(f"example {i} is empty")
        k = bisect.bisect_left(rooms, (n, -1))
        if k < len(rooms):
            room, b = rooms.pop(k)
            bins[b].append(i)
            room -= n
        else:
            b = len(bins)
            bins.append([i])
            room = max_seq_len - n
        if room > 0:
            bisect.insort(rooms, (room, b))
    return bins


def pack(examples: Sequence[TokenizedExample], max_seq_len: int) -> list[PackedRow]:
    """Pack `examples` into rows of at most `max_seq_len` tokens (best-fit decreasing).

    Every example lands in exactly one row, whole; rows keep examples in the order they were
    placed (longest first). Raises `DataError` if an example is longer than `max_seq_len`.
    """
    lengths = [len(e.input_ids) for e in examples]
    for i, e in enumerate(examples):
        if len(e.labels) != len(e.input_ids):
            raise ValueError(f"example {i}: labels and input_ids differ in length")
        if lengths[i] > max_seq_len:
            where = str(e.source) if e.source else None
            raise DataError(
                f"example has {lengths[i]} tokens, more than max_seq_len {max_seq_len}",
                where=where,
            )
    rows = []
    for members in plan_bins(lengths, max_seq_len):
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for i in members:
            ex = examples[i]
            ids.extend(ex.input_ids)
            labels.append(IGNORE_INDEX)
            labels.extend(ex.labels[1:])
            positions.extend(range(len(ex.input_ids)))
        rows.append(PackedRow(ids, labels, positions, [lengths[i] for i in members], members))
    return rows


def packing_efficiency(rows: Sequence[PackedRow], max_seq_len: int) -> float:
    """Real tokens / token slots (rows × max_seq_len); 1.0 means no padding at all."""
    if not rows:
        return 0.0
    return sum(len(r.input_ids) for r in rows) / (len(rows) * max_seq_len)
