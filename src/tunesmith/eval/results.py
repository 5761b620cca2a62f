"""What a comparison found, as plain data: per metric, per example, prompt cost, and the verdict.

These types are what every consumer reads — the report writer, the CLI table, the API's
callers, the demo — so they live apart from the code that computes them (`compare.py`) and
import nothing but the standard library (and `runs`, to read how a run ended): reading a
result never loads a model.
`to_dict()` is the results.json shape; `fmt_value`/`fmt_diff` are the one way a number is
shown (bounded metrics as percentages / percentage points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOSS_METRICS = ("heldout_loss", "perplexity")


@dataclass
class MetricComparison:
    name: str
    description: str
    higher_is_better: bool | None
    bounded: bool
    base: float | None
    tuned: float
    diff: float | None
    ci: tuple[float, float]
    p_value: float | None
    significant: bool | None
    n: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def better(self) -> bool | None:
        """True: tuned significantly better; False: significantly worse; None: no verdict."""
        if not self.significant or self.higher_is_better is None or self.diff is None:
            return None
        return (self.diff > 0) == self.higher_is_better

    @property
    def verdict(self) -> str:
        if self.base is None:
            return "single model"
        if self.higher_is_better is None:
            return "changed" if self.significant else "no significant change"
        if self.better is True:
            return "better (significant)"
        if self.better is False:
            return "worse (significant)"
        return "not significant"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "base": _finite(self.base),
            "tuned": _finite(self.tuned),
            "diff": _finite(self.diff),
            "ci": [_finite(self.ci[0]), _finite(self.ci[1])],
            "significant": self.significant,
            "p_value": _finite(self.p_value),
            "higher_is_better": self.higher_is_better,
            "verdict": self.verdict,
            "description": self.description,
            "n": self.n,
        }
        if self.base is None:  # single-model evaluation: ci is the interval of the value
            out["value"] = out.pop("tuned")
        out.update(self.details)
        return out


@dataclass
class ExampleResult:
    index: int
    source: str
    prompt: list[dict[str, str]]
    reference: str
    tuned_output: str
    tuned_scores: dict[str, float]
    base_output: str | None = None
    base_scores: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "source": self.source,
            "prompt": self.prompt,
            "reference": self.reference,
            "base_output": self.base_output,
            "tuned_output": self.tuned_output,
            "base_scores": self.base_scores,
            "tuned_scores": self.tuned_scores,
        }


@dataclass
class PromptCost:
    """Base model with the long instruction prompt vs tuned model with the short prompt."""

    metric: str
    base_long_score: float
    tuned_short_score: float
    base_short_score: float
    n: int
    diff_ci: tuple[float, float]
    significant: bool
    base_long_prompt_tokens: float
    tuned_short_prompt_tokens: float
    base_long_output_tokens: float
    tuned_short_output_tokens: float
    base_long_seconds: float
    tuned_short_seconds: float

    @property
    def token_saving(self) -> float:
        long_total = self.base_long_prompt_tokens + self.base_long_output_tokens
        short_total = self.tuned_short_prompt_tokens + self.tuned_short_output_tokens
        return 1 - short_total / long_total if long_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "base_long_prompt": {
                "score": self.base_long_score,
                "prompt_tokens_per_request": self.base_long_prompt_tokens,
                "output_tokens_per_request": self.base_long_output_tokens,
                "seconds_per_request": self.base_long_seconds,
            },
            "tuned_short_prompt": {
                "score": self.tuned_short_score,
                "prompt_tokens_per_request": self.tuned_short_prompt_tokens,
                "output_tokens_per_request": self.tuned_short_output_tokens,
                "seconds_per_request": self.tuned_short_seconds,
            },
            "base_short_prompt_score": self.base_short_score,
            "n": self.n,
            "diff_ci": list(self.diff_ci),
            "significant": self.significant,
            "token_saving": self.token_saving,
        }


@dataclass
class ComparisonResult:
    main_metric: str
    metrics: dict[str, MetricComparison]
    examples: list[ExampleResult]
    base_model: str | None
    tuned_model: str
    data: str
    settings: dict[str, Any] = field(default_factory=dict)
    forgetting: Any = None  # ForgettingResult
    prompt_cost: PromptCost | None = None
    timings: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None
    output_dir: Path | None = None
    # How the run that made the tuned model ended, when it ended before its planned steps
    # (early stopping, a time budget): read from its manifest; the verdict says it.
    training: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.training is None and self.run_dir is not None:
            self.training = training_stop(self.run_dir)

    @property
    def n(self) -> int:
        return len(self.examples)

    @property
    def main(self) -> MetricComparison:
        return self.metrics[self.main_metric]

    @property
    def improved(self) -> bool:
        """The tuned model is significantly better on the main metric."""
        return self.main.better is True

    def verdict(self) -> str:
        """One line a person reads first."""
        m = self.main
        if m.base is None:
            return f"{m.name}: {fmt_value(m, m.tuned)} on {self.n} examples"
        change = fmt_diff(m, m.diff)
        ci = f"{fmt_diff(m, m.ci[0])} .. {fmt_diff(m, m.ci[1])}"
        head = {
            True: "The tuned model is significantly better than the base model",
            False: "The tuned model is significantly WORSE than the base model",
            None: "No significant difference between the tuned and the base model",
        }[m.better]
        text = (
            f"{head} on {m.name}: {fmt_value(m, m.base)} -> {fmt_value(m, m.tuned)} "
            f"({change}, 95% CI {ci}, n={self.n})"
        )
        if self.forgetting is not None and self.forgetting.warning:
            text += "; forgetting warning (see report)"
        stop = self.training or {}
        if stop.get("stop_reason"):
            what = "stopped early" if stop.get("status") == "early_stopped" else "ended"
            text += (
                f". Training {what} at step {stop.get('steps')} of "
                f"{stop.get('planned_steps')}: {stop['stop_reason']}"
            )
            if stop.get("best_step") is not None and stop.get("status") == "early_stopped":
                text += f"; the tuned model is the best step's ({stop['best_step']})"
        return text

    def warnings(self) -> list[str]:
        """Every warning the report carries, one line each: forgetting, and any metric that
        got significantly worse (the main metric's verdict says so itself)."""
        out = []
        if self.forgetting is not None and self.forgetting.warning:
            out.append(self.forgetting.message)
        for m in self.metrics.values():
            if m.better is False and m.name != self.main_metric and m.base is not None:
                out.append(
                    f"WARNING: {m.name} got significantly worse: {fmt_value(m, m.base)} -> "
                    f"{fmt_value(m, m.tuned)} ({fmt_diff(m, m.diff)})"
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "main_metric": self.main_metric,
            "verdict": self.verdict(),
            "improved": self.improved if self.base_model else None,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "n": self.n,
            "base_model": self.base_model,
            "tuned_model": self.tuned_model,
            "data": self.data,
            "settings": self.settings,
            "forgetting": self.forgetting.to_dict() if self.forgetting else None,
            "prompt_cost": self.prompt_cost.to_dict() if self.prompt_cost else None,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "training": self.training,
            "samples": [e.to_dict() for e in self.examples],
        }


def training_stop(run_dir: str | Path) -> dict[str, Any] | None:
    """How a run ended, from its manifest: status, steps, planned steps, best step and why it
    stopped before its planned steps (None when it ran them all, or there is no manifest)."""
    from tunesmith.runs import RunDir

    try:
        manifest = RunDir(run_dir).manifest()
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not manifest.get("stop_reason"):
        return None
    keys = ("status", "steps", "planned_steps", "best_step", "stop_reason", "time_budget")
    return {k: manifest.get(k) for k in keys}


def _finite(x: float | None) -> float | None:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def fmt_value(m: MetricComparison, x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:.1f}%" if m.bounded else f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"


def fmt_diff(m: MetricComparison, x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:+.1f} pts" if m.bounded else f"{x:+.3f}"
