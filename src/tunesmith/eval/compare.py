"""Base vs tuned on the same held-out prompts: the verdict every run ends with.

Both models answer every prompt (batched, greedy, seeded, through each model's own chat
template), each answer is scored by every metric, and each metric's tuned − base difference
gets a paired bootstrap interval. Held-out loss/perplexity, the forgetting check and the
prompt-cost view are measured alongside. `compare_run` is what the training loop calls at the
end of a run; `compare_models` is the general form behind `tunesmith eval`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import ConfigError, DataError
from tunesmith.eval.examples import EvalExample, load_examples
from tunesmith.eval.metrics import Metric, build_metrics
from tunesmith.eval.stats import bootstrap_mean, paired_bootstrap

# progress(phase, done, total): phase names a step ("base: generating", ...).
Progress = Callable[[str, int, int], None]

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
        return text

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
            "samples": [e.to_dict() for e in self.examples],
        }


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


# ---------------------------------------------------------------------------------------------


def default_max_new_tokens(tokenizer: Any, references: Sequence[str], cap: int = 512) -> int:
    """Room for answers a bit longer than the longest reference, never unbounded: an answer
    25 % + 16 tokens longer than every reference is wrong anyway, and rambling base models
    would otherwise dominate evaluation time."""
    longest = max(
        (len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references), default=64
    )
    return min(cap, int(longest * 1.25) + 16)


def _load(model: Any) -> Any:
    if hasattr(model, "tokenizer") and hasattr(model, "model"):
        return model
    from tunesmith.models import load_model

    loaded = load_model(model)
    # An unmerged LoRA adds two small matmuls to every adapted layer at every decoding step;
    # merging our own private copy once makes evaluation as fast as the base model, and the
    # merged weights compute the same function (float32).
    if hasattr(loaded.model, "merge_and_unload") and loaded.dtype == _float32():
        loaded.model = loaded.model.merge_and_unload()
        loaded.model.eval()
    return loaded


def _float32() -> Any:
    import torch

    return torch.float32


def _label(model: Any) -> str:
    if hasattr(model, "ref"):
        return str(getattr(model.ref, "name", None) or model.path)
    return str(model)


def _generate(
    lm: Any,
    prompts: Sequence[Sequence[dict[str, str]]],
    max_new_tokens: int,
    seed: int,
    batch_size: int,
    progress: Progress | None,
    phase: str,
) -> list[str]:
    from tunesmith.inference import GenerationSettings, generate

    done = 0
    if progress:
        progress(phase, 0, len(prompts))

    def step(k: int) -> None:
        nonlocal done
        done += k
        if progress:
            progress(phase, done, len(prompts))

    settings = GenerationSettings(
        max_new_tokens=max_new_tokens, temperature=0.0, seed=seed, batch_size=batch_size
    )
    return generate(lm.model, lm.tokenizer, [list(p) for p in prompts], settings, progress=step)


def _losses(
    lm: Any, examples: Sequence[EvalExample], progress: Progress | None, phase: str
) -> list[Any]:
    from tunesmith.eval.loss import example_losses

    done = 0

    def step(k: int) -> None:
        nonlocal done
        done += k
        if progress:
            progress(phase, done, len(examples))

    if progress:
        progress(phase, 0, len(examples))
    return example_losses(lm.model, lm.tokenizer, [e.conversation for e in examples], progress=step)


def _compare_metric(
    metric: Metric, base: list[float] | None, tuned: list[float], seed: int
) -> MetricComparison:
    details = {k: v for k, v in metric.details.items() if k in ("schema", "schema_source")}
    if base is None:
        value, ci = bootstrap_mean(tuned, seed=seed)
        return MetricComparison(
            metric.name,
            metric.description,
            metric.higher_is_better,
            metric.bounded,
            None,
            value,
            None,
            ci,
            None,
            None,
            len(tuned),
            details,
        )
    r = paired_bootstrap(base, tuned, seed=seed)
    return MetricComparison(
        metric.name,
        metric.description,
        metric.higher_is_better,
        metric.bounded,
        r.base,
        r.tuned,
        r.diff,
        r.ci,
        r.p_value,
        r.significant,
        r.n,
        details,
    )


def _loss_comparisons(base: list[Any] | None, tuned: list[Any], seed: int) -> dict:
    from tunesmith.eval.loss import perplexity_aggregate

    tb = np.array([x.mean for x in tuned])
    wt = np.array([x.tokens for x in tuned], dtype=float)
    out: dict[str, MetricComparison] = {}
    specs = [
        ("heldout_loss", "mean NLL of the reference answers (nats/token)", None),
        ("perplexity", "perplexity of the reference answers", perplexity_aggregate),
    ]
    for name, desc, agg in specs:
        kwargs = {"aggregate": agg} if agg else {}
        if base is None:
            r = paired_bootstrap(tb, tb, weights=wt, seed=seed, **kwargs)
            out[name] = MetricComparison(
                name,
                desc,
                False,
                False,
                None,
                r.tuned,
                None,
                (r.tuned, r.tuned),
                None,
                None,
                len(tuned),
            )
            continue
        ba = np.array([x.mean for x in base])
        wa = np.array([x.tokens for x in base], dtype=float)
        r = paired_bootstrap(ba, tb, weights=wa, tuned_weights=wt, seed=seed, **kwargs)
        out[name] = MetricComparison(
            name, desc, False, False, r.base, r.tuned, r.diff, r.ci, r.p_value, r.significant, r.n
        )
    return out


def _with_system(prompt: Sequence[dict[str, str]], system: str) -> list[dict[str, str]]:
    """Replace (or add) the system message: how the long instruction prompt is applied."""
    rest = [m for m in prompt if m["role"] != "system"]
    return [{"role": "system", "content": system}, *rest]


def _prompt_tokens(lm: Any, prompts: Sequence[Sequence[dict[str, str]]]) -> float:
    from tunesmith.inference import prompt_ids

    return float(np.mean([len(prompt_ids(lm.tokenizer, list(p))) for p in prompts]))


def _output_tokens(lm: Any, outputs: Sequence[str]) -> float:
    return float(
        np.mean([len(lm.tokenizer(o, add_special_tokens=False)["input_ids"]) + 1 for o in outputs])
    )


def compare_models(
    tuned: Any,
    base: Any | None,
    examples: Sequence[EvalExample] | str | Path,
    *,
    metrics: Sequence[str] | None = None,
    main_metric: str | None = None,
    schema: dict[str, Any] | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    loss: bool = True,
    reference: str | Path | bool | None = None,
    forgetting_threshold: float | None = None,
    long_prompt: str | None = None,
    prompt_cost_limit: int | None = None,
    progress: Progress | None = None,
    output_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    limit: int | None = None,
) -> ComparisonResult:
    """Evaluate `tuned` (and `base`, when given) on held-out examples; write reports when
    `output_dir` is set. `reference=False` skips the forgetting check; `long_prompt` adds the
    prompt-cost view (the base model answering with that system prompt instead), on the first
    `prompt_cost_limit` examples when set."""
    from tunesmith.eval.forgetting import DEFAULT_THRESHOLD, check_forgetting

    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    data_label = (
        str(Path(examples).expanduser().resolve())
        if isinstance(examples, (str, Path))
        else "examples"
    )
    if isinstance(examples, (str, Path)):
        examples = load_examples(examples, limit=limit)
    elif limit is not None:
        examples = list(examples)[:limit]
    examples = list(examples)
    if not examples:
        raise DataError("no held-out examples to evaluate on")
    references = [e.reference for e in examples]
    built = build_metrics(metrics, references, schema)
    names = [m.name for m in built]
    main = main_metric or names[0]
    if main not in names and main not in LOSS_METRICS:
        raise ConfigError(f"main metric {main!r} is not among the metrics {names}")
    if main in LOSS_METRICS and not loss:
        raise ConfigError(f"main metric {main} needs the held-out loss")

    t = time.perf_counter()
    tuned_lm = _load(tuned)
    base_lm = _load(base) if base is not None else None
    timings["load_seconds"] = time.perf_counter() - t
    if max_new_tokens is None:
        max_new_tokens = default_max_new_tokens(tuned_lm.tokenizer, references)
    prompts = [list(e.prompt) for e in examples]

    base_out: list[str] | None = None
    if base_lm is not None:
        t = time.perf_counter()
        base_out = _generate(
            base_lm, prompts, max_new_tokens, seed, batch_size, progress, "base model: answering"
        )
        timings["base_generate_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    tuned_out = _generate(
        tuned_lm, prompts, max_new_tokens, seed, batch_size, progress, "tuned model: answering"
    )
    timings["tuned_generate_seconds"] = time.perf_counter() - t

    results: list[ExampleResult] = []
    for i, ex in enumerate(examples):
        row = ExampleResult(
            i,
            ex.source,
            list(ex.prompt),
            ex.reference,
            tuned_out[i],
            {m.name: m(tuned_out[i], ex.reference, ex.prompt) for m in built},
        )
        if base_out is not None:
            row.base_output = base_out[i]
            row.base_scores = {m.name: m(base_out[i], ex.reference, ex.prompt) for m in built}
        results.append(row)

    comparisons: dict[str, MetricComparison] = {}
    for m in built:
        b = [r.base_scores[m.name] for r in results] if base_out is not None else None  # type: ignore[index]
        comparisons[m.name] = _compare_metric(m, b, [r.tuned_scores[m.name] for r in results], seed)
    if loss:
        t = time.perf_counter()
        b_loss = (
            _losses(base_lm, examples, progress, "base model: held-out loss")
            if base_lm is not None
            else None
        )
        t_loss = _losses(tuned_lm, examples, progress, "tuned model: held-out loss")
        comparisons.update(_loss_comparisons(b_loss, t_loss, seed))
        timings["loss_seconds"] = time.perf_counter() - t

    forgetting = None
    if base_lm is not None and reference is not False:
        t = time.perf_counter()
        done = 0

        def fstep(k: int) -> None:
            nonlocal done
            done += k
            if progress:
                progress("forgetting check", done, 0)

        forgetting = check_forgetting(
            base_lm,
            tuned_lm,
            source=None if reference in (None, True) else reference,
            threshold=DEFAULT_THRESHOLD if forgetting_threshold is None else forgetting_threshold,
            progress=fstep,
        )
        timings["forgetting_seconds"] = time.perf_counter() - t

    prompt_cost = None
    if long_prompt and base_lm is not None:
        t = time.perf_counter()
        k = len(examples) if prompt_cost_limit is None else max(1, prompt_cost_limit)
        prompt_cost = _prompt_cost(
            base_lm,
            tuned_lm,
            prompts[:k],
            examples[:k],
            results[:k],
            built,
            main,
            long_prompt,
            max_new_tokens,
            seed,
            batch_size,
            progress,
            timings.get("tuned_generate_seconds", 0.0) / len(examples),
        )
        timings["prompt_cost_seconds"] = time.perf_counter() - t

    timings["total_seconds"] = time.perf_counter() - t_all
    result = ComparisonResult(
        main_metric=main,
        metrics=comparisons,
        examples=results,
        base_model=_label(base_lm) if base_lm is not None else None,
        tuned_model=_label(tuned_lm),
        data=data_label,
        settings={
            "max_new_tokens": max_new_tokens,
            "temperature": 0.0,
            "seed": seed,
            "batch_size": batch_size,
            "metrics": names,
        },
        forgetting=forgetting,
        prompt_cost=prompt_cost,
        timings=timings,
        run_dir=Path(run_dir) if run_dir else None,
    )
    if output_dir is not None:
        from tunesmith.eval.report import write_reports

        write_reports(result, Path(output_dir))
    return result


def _prompt_cost(
    base_lm: Any,
    tuned_lm: Any,
    prompts: list,
    examples: Sequence[EvalExample],
    results: list[ExampleResult],
    built: list[Metric],
    main: str,
    long_prompt: str,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
    progress: Progress | None,
    tuned_seconds_per_request: float,
) -> PromptCost:
    metric_name = main if main in {m.name for m in built} else built[0].name
    metric = next(m for m in built if m.name == metric_name)
    long_prompts = [_with_system(p, long_prompt) for p in prompts]
    t = time.perf_counter()
    outputs = _generate(
        base_lm,
        long_prompts,
        max_new_tokens,
        seed,
        batch_size,
        progress,
        "base model with long prompt: answering",
    )
    long_seconds = (time.perf_counter() - t) / len(prompts)
    long_scores = [
        metric(o, e.reference, e.prompt) for o, e in zip(outputs, examples, strict=False)
    ]
    tuned_scores = [r.tuned_scores[metric_name] for r in results]
    base_scores = [r.base_scores[metric_name] for r in results]  # type: ignore[index]
    r = paired_bootstrap(long_scores, tuned_scores, seed=seed)
    # Per-request latency of the tuned model from its run over all held-out prompts (same
    # distribution of prompts and batch sizes); re-running it on the subset would only cost time.
    tuned_seconds = tuned_seconds_per_request
    return PromptCost(
        metric=metric_name,
        base_long_score=r.base,
        tuned_short_score=r.tuned,
        base_short_score=float(np.mean(base_scores)),
        n=len(prompts),
        diff_ci=r.ci,
        significant=r.significant,
        base_long_prompt_tokens=_prompt_tokens(base_lm, long_prompts),
        tuned_short_prompt_tokens=_prompt_tokens(tuned_lm, prompts),
        base_long_output_tokens=_output_tokens(base_lm, outputs),
        tuned_short_output_tokens=_output_tokens(tuned_lm, [r.tuned_output for r in results]),
        base_long_seconds=long_seconds,
        tuned_short_seconds=tuned_seconds,
    )


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def _read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import json

    import yaml

    manifest_path, config_path = run_dir / "manifest.json", run_dir / "config.yaml"
    if not manifest_path.is_file() and not config_path.is_file():
        raise ConfigError(
            f"{run_dir} is not a run directory (no manifest.json or config.yaml)",
            hint="pass the directory `tunesmith train` wrote",
        )
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    config = (yaml.safe_load(config_path.read_text()) or {}) if config_path.is_file() else {}
    return manifest, config


def run_heldout(run_dir: Path, config: dict[str, Any]) -> list[EvalExample] | Path:
    """The run's validation data: its `data.validation` file, the same seeded split of the
    training file that training held out with `data.validation_fraction`, or else the file an
    earlier comparison of this run used (RUN_DIR/eval/results.json)."""
    data = config.get("data") or {}
    if data.get("validation"):
        path = Path(data["validation"])
        return path if path.is_absolute() or path.exists() else run_dir / path
    if data.get("validation_fraction") and data.get("train"):
        from tunesmith.data.prepare import split_indices

        train = Path(data["train"])
        everything = load_examples(train)
        _, held = split_indices(
            len(everything), float(data["validation_fraction"]), int(config.get("seed", 0))
        )
        return [everything[i] for i in held]
    previous = run_dir / "eval" / "results.json"
    if previous.is_file():
        import json

        try:
            earlier = json.loads(previous.read_text(encoding="utf-8")).get("data")
        except (OSError, ValueError):
            earlier = None
        if earlier and Path(earlier).is_file():
            return Path(earlier)
    raise DataError(f"run {run_dir} has no validation data", hint="pass --data HELD_OUT.jsonl")


def compare_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    output_dir: str | Path | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ComparisonResult:
    """Compare a finished run's model with its base model on held-out data.

    Defaults come from the run: base model from manifest.json, held-out data from config.yaml
    (`data.validation` or the validation split), metrics/schema/reference/long prompt from its
    `eval` section when present. Reports go to RUN_DIR/eval/ unless `output_dir` says
    otherwise."""
    run_dir = Path(run_dir)
    options = {k: v for k, v in options.items() if v is not None}  # unset: the run decides
    manifest, config = _read_run(run_dir)
    eval_cfg = config.get("eval") or {}
    base = manifest.get("base_model_path") or manifest.get("base_model") or config.get("model")
    if base and manifest.get("base_model_path") and not Path(str(base)).exists():
        base = manifest.get("base_model") or config.get("model")
    if not base:
        raise ConfigError(f"run {run_dir} does not say which base model it started from")
    tuned = run_dir / "final" if (run_dir / "final").is_dir() else run_dir
    examples = Path(data) if data is not None else run_heldout(run_dir, config)
    for key, cfg_key in (
        ("metrics", "metrics"),
        ("schema", "json_schema"),
        ("main_metric", "main_metric"),
        ("reference", "reference"),
        ("forgetting_threshold", "forgetting_threshold"),
        ("long_prompt", "long_prompt"),
    ):
        if key not in options and eval_cfg.get(cfg_key) is not None:
            options[key] = eval_cfg[cfg_key]
    if isinstance(options.get("metrics"), str):
        options["metrics"] = [m for m in options["metrics"].split(",") if m.strip()]
    if isinstance(options.get("schema"), str):
        options["schema"] = load_schema(options["schema"])
    if _looks_like_file(options.get("long_prompt")):
        options["long_prompt"] = Path(options["long_prompt"]).read_text(encoding="utf-8")
    result = compare_models(
        tuned,
        base,
        examples,
        progress=progress,
        output_dir=output_dir or run_dir / "eval",
        run_dir=run_dir,
        **options,
    )
    return result


def _looks_like_file(value: Any) -> bool:
    """A config value that names a file (rather than holding the text itself)."""
    if not isinstance(value, (str, Path)) or "\n" in str(value) or len(str(value)) > 1024:
        return False
    try:
        return Path(value).is_file()
    except OSError:
        return False


def load_schema(path: str | Path) -> dict[str, Any]:
    import json

    p = Path(path)
    try:
        schema = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"schema file {p} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"schema file {p} is not JSON: {exc.msg}") from None
    if not isinstance(schema, dict):
        raise ConfigError(f"schema file {p} must hold a JSON object")
    return schema
