"""Packing: best-fit decreasing, positions restart, loss masks survive, logits unchanged."""

from __future__ import annotations

import random

import pytest

from tunesmith.data.packing import pack, packing_efficiency, plan_bins
from tunesmith.data.records import Conversation, Message, Source
from tunesmith.data.tokenize import IGNORE_INDEX, TokenizedExample, tokenize_conversation
from tunesmith.errors import DataError


def fake(n: int, i: int = 0) -> TokenizedExample:
    ids = [100 + i] * n
    return TokenizedExample(ids, [IGNORE_INDEX] * (n // 2) + ids[n // 2 :], Source("f", i + 1))


def test_best_fit_decreasing_places_each_example_once_and_fills_rows():
    rng = random.Random(0)
    lengths = [rng.randint(1, 60) for _ in range(300)]
    bins = plan_bins(lengths, 64)
    placed = sorted(i for b in bins for i in b)
    assert placed == list(range(300))
    assert all(sum(lengths[i] for i in b) <= 64 for b in bins)
    lower_bound = -(-sum(lengths) // 64)
    assert len(bins) <= lower_bound * 1.15  # BFD is near optimal on random sizes
    assert plan_bins(lengths, 64) == bins  # deterministic


def test_best_fit_picks_the_tightest_row():
    # 6 goes first (row A, room 4), then 5 (row B, room 5), then 4 must go to A (tightest).
    assert plan_bins([6, 5, 4], 10) == [[0, 2], [1]]


def test_pack_positions_restart_and_labels_survive():
    examples = [fake(n, i) for i, n in enumerate([5, 9, 3, 7, 2])]
    rows = pack(examples, 12)
    seen = []
    for row in rows:
        assert len(row.input_ids) == len(row.labels) == len(row.position_ids) == sum(row.lengths)
        start = 0
        for idx, n in zip(row.indices, row.lengths, strict=True):
            ex = examples[idx]
            assert row.input_ids[start : start + n] == ex.input_ids
            assert row.position_ids[start : start + n] == list(range(n))
            # first token never carries loss (it would be predicted across the boundary)
            assert row.labels[start] == IGNORE_INDEX
            assert row.labels[start + 1 : start + n] == ex.labels[1:]
            start += n
            seen.append(idx)
    assert sorted(seen) == list(range(5))
    eff = packing_efficiency(rows, 12)
    assert eff == pytest.approx(26 / (len(rows) * 12))


def test_pack_rejects_over_long_examples_naming_the_line():
    with pytest.raises(DataError) as info:
        pack([fake(5), fake(20, 3)], 16)
    assert info.value.where == "f:4"


def test_packed_logits_and_loss_equal_unpacked(tiny_model_dir, tiny_tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    model.eval()
    convs = [
        Conversation((Message("user", q), Message("assistant", a)), Source("f", i + 1))
        for i, (q, a) in enumerate(
            [
                ("What is the capital of France?", "Paris."),
                ("Hello, can you help with my account password reset?", "Yes, I can help you."),
                ("Thanks", "You are welcome, have a good day and write again."),
            ]
        )
    ]
    examples = [tokenize_conversation(c, tiny_tokenizer, train_on="all") for c in convs]
    rows = pack(examples, 256)
    assert len(rows) == 1 and len(rows[0].lengths) == 3
    row = rows[0]
    with torch.no_grad():
        packed = model(
            input_ids=torch.tensor([row.input_ids]),
            position_ids=torch.tensor([row.position_ids]),
            use_cache=False,
        ).logits[0]
        start = 0
        packed_loss_sum = torch.nn.functional.cross_entropy(
            packed[:-1], torch.tensor(row.labels[1:]), reduction="sum", ignore_index=IGNORE_INDEX
        )
        alone_loss_sum = 0.0
        for idx, n in zip(row.indices, row.lengths, strict=True):
            ex = examples[idx]
            alone = model(input_ids=torch.tensor([ex.input_ids]), use_cache=False).logits[0]
            diff = (packed[start : start + n] - alone).abs().max().item()
            assert diff < 1e-4, f"example {idx}: max logit diff {diff}"
            alone_loss_sum += torch.nn.functional.cross_entropy(
                alone[:-1], torch.tensor(ex.labels[1:]), reduction="sum"
            ).item()
            start += n
    assert packed_loss_sum.item() == pytest.approx(alone_loss_sum, rel=1e-4)
