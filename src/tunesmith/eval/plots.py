"""The report's plots, drawn with matplotlib (Agg) and returned as base64 PNG strings.

Apart from the report text because matplotlib is heavy and only the HTML report needs it; each
plot returns None when there is nothing to draw, so a report never shows an empty chart.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

from tunesmith.eval.results import ComparisonResult


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curves(rows: Sequence[dict[str, Any]]) -> str | None:
    """Training loss (and validation loss when logged) against step, as base64 PNG."""
    train = [(r["step"], r["loss"]) for r in rows if _num(r.get("loss"))]
    val = [(r["step"], r["val_loss"]) for r in rows if _num(r.get("val_loss"))]
    if not train and not val:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    if train:
        ax.plot(*zip(*train, strict=False), label="training loss", color="#4c72b0", linewidth=1.4)
    if val:
        ax.plot(
            *zip(*val, strict=False),
            label="validation loss",
            color="#dd8452",
            marker="o",
            linewidth=1.6,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss curves")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def plot_base_vs_tuned(result: ComparisonResult) -> str | None:
    """Bars for every bounded (0..1) metric, tuned bars with the CI of tuned − base."""
    ms = [m for m in result.metrics.values() if m.bounded and m.base is not None]
    if not ms:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.8, 1.2 * len(ms) + 2), 3.6))
    xs = range(len(ms))
    base = [100 * (m.base or 0) for m in ms]
    tuned = [100 * m.tuned for m in ms]
    # The interval belongs to the difference; drawn on the tuned bar it reads "tuned could
    # plausibly be this much above/below the base".
    lo = [100 * max(0.0, m.tuned - ((m.diff or 0) - m.ci[0])) for m in ms]
    hi = [100 * min(1.0, m.tuned + (m.ci[1] - (m.diff or 0))) for m in ms]
    err = [
        [t - lo_ for t, lo_ in zip(tuned, lo, strict=False)],
        [hi_ - t for t, hi_ in zip(tuned, hi, strict=False)],
    ]
    ax.bar([x - 0.2 for x in xs], base, width=0.4, label="base", color="#9aa5b1")
    ax.bar(
        [x + 0.2 for x in xs], tuned, width=0.4, label="tuned", color="#2a9d8f", yerr=err, capsize=4
    )
    for x, m in zip(xs, ms, strict=False):
        mark = "*" if m.better else ""
        ax.text(x + 0.2, min(100, 100 * m.tuned) + 2, mark, ha="center", fontsize=14)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([m.name for m in ms], rotation=20, ha="right")
    ax.set_ylim(0, 110)
    ax.set_ylabel("score (%)")
    ax.set_title("Base vs tuned (95% CI of the difference; * = significantly better)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_differences(result: ComparisonResult) -> str | None:
    """Forest plot: each 0..1 metric's tuned − base (points) with its interval, against zero.
    Unbounded metrics (loss, length) have other units and stay in the table."""
    ms = [
        m
        for m in result.metrics.values()
        if m.base is not None
        and m.bounded
        and m.diff is not None
        and all(math.isfinite(v) for v in (m.diff, *m.ci))
    ]
    if not ms:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(ms) + 1.2))
    for y, m in enumerate(ms):
        scale = 100
        color = {True: "#2a9d8f", False: "#e76f51", None: "#6c757d"}[m.better]
        ax.plot([scale * m.ci[0], scale * m.ci[1]], [y, y], color=color, linewidth=3)
        if m.diff is not None:
            ax.plot([scale * m.diff], [y], "o", color=color)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(ms)))
    ax.set_yticklabels([m.name for m in ms])
    ax.set_ylim(len(ms) - 0.5, -0.5)  # top to bottom in table order, no empty margins
    ax.set_xlabel("tuned − base, percentage points (95% paired bootstrap CI)")
    ax.set_title("Differences")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
