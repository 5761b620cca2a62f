"""Paired bootstrap confidence intervals: is the tuned model's difference real or noise?

Both models answer the *same* held-out prompts, so we resample prompts (not the two models
separately) and recompute the difference each time. This keeps the pairing, which makes the
interval much tighter than comparing two independent means, and needs no distributional
assumption — scores are often 0/1 or bounded. A difference is called significant when the
two-sided `confidence` interval excludes zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

Aggregate = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BootstrapResult:
    """Difference tuned − base of an aggregate (or relative change), with its interval."""

    base: float
    tuned: float
    diff: float
    ci: tuple[float, float]
    p_value: float
    significant: bool
    n: int
    confidence: float
    resamples: int

    def to_dict(self) -> dict:
        return {
            "base": self.base,
            "tuned": self.tuned,
            "diff": self.diff,
            "ci": [self.ci[0], self.ci[1]],
            "p_value": self.p_value,
            "significant": self.significant,
            "n": self.n,
            "confidence": self.confidence,
        }


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise weighted mean of `values` (resamples × n)."""
    return (values * weights).sum(axis=-1) / np.maximum(weights.sum(axis=-1), 1e-12)


def paired_bootstrap(
    base: ArrayLike,
    tuned: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    tuned_weights: ArrayLike | None = None,
    aggregate: Aggregate = weighted_mean,
    relative: bool = False,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Percentile bootstrap of `aggregate(tuned) − aggregate(base)` over paired examples.

    `aggregate(values, weights)` maps arrays of shape (resamples, n) to (resamples,); the
    default is the (weighted) mean. Perplexity passes `exp(weighted mean NLL)` with token
    counts as weights (`tuned_weights` when the tuned model tokenises differently). With
    `relative`, the statistic is `aggregate(tuned) / aggregate(base) − 1`. The p-value is
    the two-sided bootstrap estimate (how often the resampled difference falls on the other
    side of zero), floored at 1/resamples.
    """
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(tuned, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two equal 1-D sequences, got {a.shape}, {b.shape}")
    n = a.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    wb = w if tuned_weights is None else np.asarray(tuned_weights, dtype=np.float64)
    if w.shape != a.shape or wb.shape != a.shape:
        raise ValueError("weights must have one entry per example")

    def stat(x_base: np.ndarray, x_tuned: np.ndarray) -> np.ndarray:
        if relative:
            return x_tuned / np.where(x_base == 0, np.nan, x_base) - 1
        return x_tuned - x_base

    if n == 0:
        nan = float("nan")
        return BootstrapResult(nan, nan, nan, (nan, nan), 1.0, False, 0, confidence, 0)
    point_base = float(aggregate(a[None, :], w[None, :])[0])
    point_tuned = float(aggregate(b[None, :], wb[None, :])[0])
    diff = float(stat(np.array([point_base]), np.array([point_tuned]))[0])
    if n < 2:
        return BootstrapResult(
            point_base, point_tuned, diff, (diff, diff), 1.0, False, n, confidence, 0
        )
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    # Chunk so resamples × n index matrices stay small for large held-out sets.
    chunk = max(1, min(resamples, 4_000_000 // n))
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        diffs[start:stop] = stat(aggregate(a[idx], w[idx]), aggregate(b[idx], wb[idx]))
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha])
    lo, hi = float(lo), float(hi)
    # Guard against floating-point noise around identical scores (e.g. all diffs exactly 0).
    tol = 1e-12 * max(1.0, abs(point_base), abs(point_tuned))
    if abs(lo - diff) < tol:
        lo = diff
    if abs(hi - diff) < tol:
        hi = diff
    below = float(np.mean(diffs <= 0))
    above = float(np.mean(diffs >= 0))
    p_value = min(1.0, max(2 * min(below, above), 1 / resamples))
    significant = (lo > 0 or hi < 0) and diff != 0
    return BootstrapResult(
        point_base,
        point_tuned,
        diff,
        (lo, hi),
        p_value,
        bool(significant),
        n,
        confidence,
        resamples,
    )


def bootstrap_mean(
    values: Sequence[float], *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """Mean of one model's scores with a percentile bootstrap interval (single-model eval)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), (float("nan"), float("nan"))
    mean = float(x.mean())
    if x.size < 2:
        return mean, (mean, mean)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return mean, (float(lo), float(hi))
