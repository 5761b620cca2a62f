"""The paired bootstrap against cases whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunesmith.eval.stats import bootstrap_mean, paired_bootstrap


def test_constant_improvement_has_a_degenerate_interval_and_is_significant() -> None:
    base = [0.0] * 50
    tuned = [1.0] * 50
    r = paired_bootstrap(base, tuned)
    assert (r.base, r.tuned, r.diff) == (0.0, 1.0, 1.0)
    assert r.ci == (1.0, 1.0)
    assert r.significant
    assert r.p_value == pytest.approx(1 / 2000)


def test_identical_scores_are_not_significant() -> None:
    scores = [0.0, 1.0, 1.0, 0.0, 1.0] * 10
    r = paired_bootstrap(scores, scores)
    assert r.diff == 0.0
    assert r.ci == (0.0, 0.0)
    assert not r.significant
    assert r.p_value == 1.0


def test_interval_matches_the_normal_theory_interval_for_a_known_mean() -> None:
    rng = np.random.default_rng(123)
    n = 400
    base = rng.normal(0.0, 1.0, n)
    diff = rng.normal(0.3, 1.0, n)
    r = paired_bootstrap(base, base + diff, resamples=4000, seed=1)
    mean, se = diff.mean(), diff.std(ddof=1) / math.sqrt(n)
    assert r.diff == pytest.approx(mean)
    # Percentile bootstrap ≈ mean ± 1.96·SE for a mean of iid normals.
    assert r.ci[0] == pytest.approx(mean - 1.96 * se, abs=0.25 * se)
    assert r.ci[1] == pytest.approx(mean + 1.96 * se, abs=0.25 * se)
    assert r.significant


def test_pure_noise_is_usually_not_significant() -> None:
    rng = np.random.default_rng(7)
    false_positives = 0
    for trial in range(40):
        a = rng.integers(0, 2, 60).astype(float)
        b = rng.permutation(a)  # same distribution, no real effect
        false_positives += paired_bootstrap(a, b, resamples=500, seed=trial).significant
    assert false_positives <= 6  # ~5 % expected at 95 % confidence


def test_pairing_makes_small_consistent_gains_significant() -> None:
    # Big spread between examples, but tuned is always exactly 0.05 better: pairing sees it.
    base = np.linspace(0, 1, 100)
    r = paired_bootstrap(base, base + 0.05)
    assert r.significant and r.ci[0] == pytest.approx(0.05)


def test_weighted_and_relative_aggregates() -> None:
    base = [1.0, 3.0]
    tuned = [2.0, 3.0]
    r = paired_bootstrap(base, tuned, weights=[3, 1])
    assert r.base == pytest.approx((3 * 1 + 3) / 4)
    assert r.tuned == pytest.approx((3 * 2 + 3) / 4)
    rel = paired_bootstrap(base, tuned, relative=True)
    assert rel.diff == pytest.approx(2.5 / 2.0 - 1)


def test_degenerate_inputs() -> None:
    one = paired_bootstrap([0.0], [1.0])
    assert one.diff == 1.0 and not one.significant
    empty = paired_bootstrap([], [])
    assert empty.n == 0 and not empty.significant
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_bootstrap_mean_interval_contains_the_mean() -> None:
    mean, (lo, hi) = bootstrap_mean([0, 1, 1, 1, 0, 1, 1, 0, 1, 1])
    assert mean == pytest.approx(0.7)
    assert lo < 0.7 < hi and lo >= 0.0 and hi <= 1.0
