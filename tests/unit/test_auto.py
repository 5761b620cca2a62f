"""The automatic rules (tunesmith/auto.py) at their edges: tiny to huge data sets, short and
long examples, user values kept, the validation sample, and fitting steps to a time budget."""

from __future__ import annotations

import pytest

from tunesmith import auto
from tunesmith.config import RunSpec, load_spec

SEQ = 1024


def plan(n: int, tokens: int, *, n_val: int = 0, val_tokens: int = 0, **spec):
    """The plan for n examples of `tokens` tokens each, packed into rows of 1024 tokens."""
    per_row = max(1, SEQ // tokens)
    rows = -(-n // per_row)
    val_rows = -(-n_val // per_row) if n_val else 0
    return auto.plan_run(
        load_spec(spec),
        n_examples=n,
        n_rows=rows,
        row_tokens=n * tokens,
        n_val_rows=val_rows,
        val_row_tokens=n_val * val_tokens,
    )


@pytest.mark.parametrize(
    ("n", "passes"),
    [(1, 25), (10, 100), (33, 100), (100, 300), (200, 600), (443, 600), (600, 600),
     (1000, 1000), (20_000, 20_000), (100_000, 100_000)],
)  # fmt: skip
def test_example_passes_follow_the_rule(n, passes):
    assert auto.auto_passes(n) == passes
    assert n <= auto.auto_passes(n) <= max(auto.MAX_EPOCHS * n, 100)  # 1..25 epochs


@pytest.mark.parametrize("tokens", [100, 1000])  # short (10 per row) and long (1 per row)
@pytest.mark.parametrize("n", [10, 100, 1000, 20_000, 100_000])
def test_plans_at_the_edges(n, tokens):
    p = plan(n, tokens)
    per_step_tokens = p.train_tokens / p.total_steps
    assert 1 <= p.epochs <= auto.MAX_EPOCHS
    assert p.passes >= min(100, auto.MAX_EPOCHS * n) and p.passes >= n  # the floor
    assert per_step_tokens <= auto.MAX_TOKENS_PER_STEP + SEQ
    assert p.total_steps >= min(auto.MIN_STEPS, auto.MAX_EPOCHS * p.steps_per_epoch)
    assert "epochs" in p.notes and "grad_accum" in p.notes and "learning_rate" in p.notes
    if n >= 1000:
        assert p.epochs == 1  # a large set is seen once
    if n >= 20_000:
        assert per_step_tokens > 8000  # large sets take big steps (up to ~16k tokens)


def test_small_sets_take_small_steps_and_large_sets_big_ones():
    small, mid, big = plan(100, 1000), plan(1000, 1000), plan(20_000, 1000)
    assert small.examples_per_step == pytest.approx(3, abs=0.1)  # 300 passes / 100 steps
    assert mid.examples_per_step == pytest.approx(10, abs=0.1)
    assert big.examples_per_step == pytest.approx(16, abs=0.1)  # 16k tokens of 1k examples
    assert small.total_steps == 102 and mid.total_steps == 100 and big.total_steps == 1250
    # the issue's data set: 600 short examples -> one epoch (600 passes), not 10 epochs
    issue = plan(600, 300)
    assert issue.passes == 600 and issue.epochs == 1
    assert 80 <= issue.total_steps <= 120


@pytest.mark.parametrize(
    ("adapter", "n_params", "rate"),
    [("lora", 135e6, 5e-4), ("qlora", 7e9, 2e-4), ("dora", 70e9, 1e-4), ("lora", None, 2e-4),
     ("none", 135e6, 2e-5)],
)  # fmt: skip
def test_the_learning_rate_follows_the_adapter_and_the_model_size(adapter, n_params, rate):
    got, why = auto.auto_learning_rate(adapter, 1.0, n_params)
    assert got == pytest.approx(rate) and f"{rate:g}" in why
    assert auto.auto_learning_rate(adapter, 0.5, n_params)[0] == pytest.approx(rate / 2)
    spec = load_spec({"adapter": adapter})
    p = auto.plan_run(
        spec, n_examples=100, n_rows=10, row_tokens=10_000, n_val_rows=0, val_row_tokens=0,
        n_params=n_params,
    )  # fmt: skip
    assert p.learning_rate == pytest.approx(rate)


def test_user_values_are_kept():
    p = plan(1000, 100, epochs=3, grad_accum=4, learning_rate=1e-3)
    assert (p.epochs, p.grad_accum, p.learning_rate) == (3, 4, 1e-3)
    assert p.passes == 3000 and p.total_steps == 3 * 25
    assert "epochs" not in p.notes and "grad_accum" not in p.notes
    capped = plan(1000, 100, max_steps=7)
    assert capped.total_steps == 7 and capped.epochs == 1
    full = plan(1000, 100, adapter="none")
    assert full.learning_rate == pytest.approx(2e-5)


def test_validation_is_a_capped_share_and_early_stopping_needs_held_out_data():
    none = plan(1000, 100)
    assert none.eval_every_steps is None and none.val_tokens == 0
    assert none.early_stopping is False
    p = plan(1000, 100, n_val=5000, val_tokens=100)
    assert p.early_stopping is True and p.eval_every_steps == 17  # 100 steps / 6
    assert auto.MIN_VAL_TOKENS <= p.val_max_tokens <= auto.MAX_VAL_TOKENS
    # the sample is far smaller than the held-out file, and validation a small share
    assert p.val_tokens < 0.1 * 5000 * 100
    assert p.val_tokens / 2 <= 0.2 * p.train_tokens
    huge = plan(100_000, 1000, n_val=10_000, val_tokens=1000)
    assert huge.val_max_tokens == auto.MAX_VAL_TOKENS
    full = plan(1000, 100, n_val=100, val_tokens=100, adapter="none")
    assert full.early_stopping is False  # a best checkpoint of a full fine-tune is costly
    assert plan(1000, 100, n_val=100, val_tokens=100, eval={"max_tokens": 50}).val_max_tokens == 50


def test_the_validation_sample_is_seeded_capped_and_stable():
    rows = [[0] * (10 + i % 7) for i in range(200)]
    a = auto.sample_rows(rows, 500, seed=3)
    assert a == auto.sample_rows(rows, 500, seed=3)
    assert sum(len(r) for r in a) <= 500 and len(a) >= 30
    assert a != auto.sample_rows(rows, 500, seed=4)
    assert auto.sample_rows(rows, None, seed=0) == rows
    assert auto.sample_rows(rows, 10**9, seed=0) == rows
    assert len(auto.sample_rows([[0] * 900], 100, seed=0)) == 1  # never empty


def test_fitting_steps_to_a_budget():
    fit = auto.fit_steps_to_budget(
        planned_steps=300, steps_per_epoch=100, budget_s=300, elapsed_s=10,
        done_steps=2, step_s=2.5, eval_s=5.0, eval_every=30,
    )  # fmt: skip
    # (300 - 10) s left / (2.5 + 5/30) s per step = 108 more steps
    assert fit.cut and fit.steps == 2 + 108
    assert fit.message.startswith("3 epochs (300 steps) would take 13.4 min; 1.1 epochs")
    assert fit.message.endswith("fit in 5.0 min")
    roomy = auto.fit_steps_to_budget(
        planned_steps=50, steps_per_epoch=100, budget_s=600, elapsed_s=0, done_steps=0, step_s=1
    )
    assert not roomy.cut and roomy.steps == 50 and "within the budget" in roomy.message
    spent = auto.fit_steps_to_budget(
        planned_steps=50, steps_per_epoch=10, budget_s=10, elapsed_s=30, done_steps=5, step_s=1
    )
    assert spent.steps == 6  # never fewer than the steps done, and the one that is running


DURATIONS = [("5m", 300), ("90s", 90), ("1h30m", 5400), ("2.5min", 150), (120, 120), ("300", 300)]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_time_budget_reads_durations(text, seconds):
    assert RunSpec.model_validate({"time_budget": text}).time_budget == seconds


@pytest.mark.parametrize("bad", ["", "soon", "5q", "-5m", "0s", [5], True])
def test_a_bad_time_budget_names_the_key(bad):
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match="time_budget"):
        load_spec({"time_budget": bad})
