"""ORPO on the tiny model: the loss is the formula, it trains without a reference, and the
odds of the chosen answers rise above the rejected ones'."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from train_helpers import base_spec, write_pairs

from tunesmith import api
from tunesmith.train.batching import Row
from tunesmith.train.objectives.orpo import ORPOLoss, log1m_exp
from tunesmith.train.objectives.preference import PairRow, blank_pair, collate_pairs


def _row(seed: int, n: int) -> Row:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 600, (6 + n,), generator=g).tolist()
    return Row(ids, [-100] * 6 + ids[6:], list(range(len(ids))))


def test_the_loss_is_sft_plus_the_odds_ratio_term(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    rows = [PairRow(_row(0, 4), _row(1, 6)), PairRow(_row(2, 3), _row(3, 2))]
    beta = 0.25
    with torch.no_grad():
        out = ORPOLoss(model, beta=beta)(**collate_pairs(rows, 0, "cpu"))
        padded = ORPOLoss(model, beta=beta)(**collate_pairs([*rows, blank_pair(rows[0])], 0, "cpu"))

        def mean_logp(row: Row) -> float:
            logp = torch.log_softmax(model(input_ids=torch.tensor([row.input_ids])).logits[0], -1)
            picked = [logp[i, t].item() for i, t in enumerate(row.labels[1:]) if t != -100]
            return sum(picked) / len(picked)

    want = 0.0
    for r in rows:
        m_c, m_r = mean_logp(r.chosen), mean_logp(r.rejected)
        odds = (m_c - math.log(-math.expm1(m_c))) - (m_r - math.log(-math.expm1(m_r)))
        want += -m_c - beta * float(F.logsigmoid(torch.tensor(odds)))
    assert out["loss"].item() == pytest.approx(want, rel=1e-4)
    assert int(out["count"]) == 2
    for key, value in out.items():
        assert padded[key].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), key
    assert torch.isfinite(log1m_exp(torch.tensor([0.0, -1e-9, -3.0]))).all()


def test_orpo_trains_and_prefers_the_chosen_answers(tiny_model_dir, tmp_path):
    from tunesmith.eval.preference import compare_margins, log_prob_margins, read_pairs
    from tunesmith.models.load import load_model

    train = write_pairs(tmp_path / "train.jsonl", 64)
    val = write_pairs(tmp_path / "val.jsonl", 24, seed=1)
    events: list = []
    result = api.train(
        base_spec(
            tiny_model_dir,
            train,
            tmp_path / "run",
            method={"type": "orpo", "orpo": {"beta": 0.5}},
            data={"train": str(train), "validation": str(val), "max_seq_len": 128},
            eval={"every_steps": 4, "compare_base": False},
            learning_rate=1e-2,
            batch_size=4,
            grad_accum=1,
            max_steps=24,
        ),
        on_event=events.append,
    )
    losses = result.losses
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.5  # the SFT part falls fast
    assert not any(e.kind == "message" and e.phase == "reference" for e in events)  # no ref
    evals = [m for m in result.metrics if "val_loss" in m]
    assert evals[-1]["val_log_odds_ratio"] > evals[0]["val_log_odds_ratio"] + 0.5
    assert evals[-1]["val_nll_loss"] < evals[0]["val_nll_loss"]
    assert all("nll_loss" in m and "preference_accuracy" in m for m in result.metrics)
    pairs = read_pairs(val)
    base = load_model(tiny_model_dir)
    tuned = SimpleNamespace(model=result.model.eval(), tokenizer=base.tokenizer)
    found = compare_margins(log_prob_margins(base, pairs), log_prob_margins(tuned, pairs), beta=0.5)
    acc = found["preference_accuracy"]
    assert acc.tuned > acc.base + 0.2 and found["reward_margin"].diff > 0
