"""The preference comparison's numbers and which held-out pairs it reads (no model needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tunesmith.errors import DataError
from tunesmith.eval.preference import compare_margins, heldout_pairs, method_beta


def test_accuracy_and_margin_are_paired_base_vs_tuned():
    base = np.array([-2.0, 1.0, -0.5, -3.0, 0.5, -1.0] * 4)
    tuned = base + 2.5  # every pair moved towards the chosen answer by 2.5 nats
    found = compare_margins(base, tuned, beta=0.2)
    acc, margin = found["preference_accuracy"], found["reward_margin"]
    assert acc.base == pytest.approx(8 / 24) and acc.tuned == pytest.approx(20 / 24)
    assert acc.bounded and acc.higher_is_better and acc.significant and acc.better
    assert margin.diff == pytest.approx(0.2 * 2.5)  # the mean implicit reward margin
    assert margin.ci == pytest.approx((0.5, 0.5)) and not margin.bounded
    wins = found["reward_accuracy"]
    assert wins.base is None and wins.tuned == 1.0 and wins.verdict == "single model"
    same = compare_margins(base, base, beta=0.2)
    assert same["preference_accuracy"].diff == 0 and not same["preference_accuracy"].significant
    assert same["reward_accuracy"].tuned == 0.0  # no pair moved: no reward favours anything


def _pairs_file(path, n):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            row = {"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}"}
            f.write(json.dumps(row) + "\n")
    return path


def test_heldout_pairs_are_the_split_training_held_out(tmp_path, tiny_tokenizer):
    from tunesmith.data.prepare import prepare_preference

    train = _pairs_file(tmp_path / "train.jsonl", 40)
    config = {"data": {"train": str(train), "validation_fraction": 0.25}, "seed": 7}
    held = heldout_pairs(config)
    data = prepare_preference(train, tiny_tokenizer, validation_fraction=0.25, seed=7)
    assert len(held) == len(data.validation) == 10
    want = [tiny_tokenizer.decode(p.chosen.input_ids) for p in data.validation]
    assert all(p.chosen in text for p, text in zip(held, want, strict=True))
    other = _pairs_file(tmp_path / "other.jsonl", 5)
    assert len(heldout_pairs(config, other)) == 5  # --data wins
    assert len(heldout_pairs({"data": {"validation": str(other)}})) == 5
    with pytest.raises(DataError, match="no held-out preference pairs"):
        heldout_pairs({"data": {"train": str(train)}})


def test_the_runs_beta():
    assert method_beta({"method": {"type": "dpo", "dpo": {"beta": 0.3}}}) == 0.3
    assert method_beta({"method": {"type": "orpo", "orpo": {"beta": 0.5}}}) == 0.5
    assert method_beta({"method": "dpo"}) == 0.1 and method_beta({}) == 0.1
