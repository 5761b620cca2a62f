"""Base vs tuned on the same held-out prompts: the verdict every run ends with.

Both models answer every prompt (batched, greedy, seeded, through each model's own chat
template, see `answers.py`), every grader scores each answer, and each metric's tuned − base
difference gets a paired bootstrap interval. Held-out loss/perplexity, the forgetting check and
the prompt-cost view are measured alongside. `compare_run` is what the training loop calls at
the end of a run (it reads the run's defaults through `RunDir`); `compare_models` is the
general form behind `tunesmith eval`. What comes out is plain data (`results.py`); the reports
are written by `report.py`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith import events
from tunesmith.auto import EVAL_BATCH_ROWS
from tunesmith.config import PREFERENCE_METHODS
from tunesmith.errors import ConfigError, DataError
from tunesmith.eval.answers import answer, default_max_new_tokens, label, load_for_eval
from tunesmith.eval.examples import EvalExample, load_examples
from tunesmith.eval.results import LOSS_METRICS, ComparisonResult, ExampleResult, MetricComparison
from tunesmith.eval.stats import bootstrap_mean, paired_bootstrap
from tunesmith.events import Reporter
from tunesmith.graders import Grader, Item, Sample, build_graders, is_code_grader
from tunesmith.runs import RunDir

__all__ = ["compare_models", "compare_run", "compare_scores", "load_schema", "run_heldout"]


def compare_scores(
    grader: Grader, base: Sequence[float] | None, tuned: Sequence[float], seed: int
) -> MetricComparison:
    """One grader's per-example scores as a comparison (or, without `base`, a value with its
    bootstrap interval)."""
    details = {k: v for k, v in grader.details.items() if k in ("schema", "schema_source")}
    head = (grader.name, grader.description, grader.higher_is_better, grader.bounded)
    if base is None:
        value, ci = bootstrap_mean(tuned, seed=seed)
        return MetricComparison(*head, None, value, None, ci, None, None, len(tuned), details)
    r = paired_bootstrap(base, tuned, seed=seed)
    return MetricComparison(
        *head, r.base, r.tuned, r.diff, r.ci, r.p_value, r.significant, r.n, details
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
        kwargs: dict[str, Any] = {"aggregate": agg} if agg else {}
        if base is None:
            r = paired_bootstrap(tb, tb, weights=wt, seed=seed, **kwargs)
            point = (r.tuned, r.tuned)
            out[name] = MetricComparison(
                name, desc, False, False, None, r.tuned, None, point, None, None, len(tuned)
            )
            continue
        ba = np.array([x.mean for x in base])
        wa = np.array([x.tokens for x in base], dtype=float)
        r = paired_bootstrap(ba, tb, weights=wa, tuned_weights=wt, seed=seed, **kwargs)
        out[name] = MetricComparison(
            name, desc, False, False, r.base, r.tuned, r.diff, r.ci, r.p_value, r.significant, r.n
        )
    return out


def _losses(lm: Any, examples: Sequence[EvalExample], on_event: Reporter | None, who: str):
    from tunesmith.eval.loss import example_losses

    return example_losses(
        lm.model,
        lm.tokenizer,
        [e.record() for e in examples],
        on_event=on_event,
        phase=f"loss:{who}",
        label=f"{who} model: held-out loss",
    )


def _grade(graders: Sequence[Grader], output: str, item: Item) -> dict[str, float]:
    sample = Sample(output)  # one Sample for all graders: its JSON is parsed once
    return {g.name: g.grade(sample, item) for g in graders}


def compare_models(
    tuned: Any,
    base: Any | None,
    examples: Sequence[EvalExample] | str | Path,
    *,
    metrics: Sequence[str] | None = None,
    main_metric: str | None = None,
    schema: dict[str, Any] | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = EVAL_BATCH_ROWS,
    seed: int = 0,
    loss: bool = True,
    reference: str | Path | bool | None = None,
    forgetting_threshold: float | None = None,
    long_prompt: str | None = None,
    prompt_cost_limit: int | None = None,
    on_event: Reporter | None = None,
    output_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    limit: int | None = None,
) -> ComparisonResult:
    """Evaluate `tuned` (and `base`, when given) on held-out examples; write reports when
    `output_dir` is set. `reference=False` skips the forgetting check; `long_prompt` adds the
    prompt-cost view (the base model answering with that system prompt instead), on the first
    `prompt_cost_limit` examples when set. Progress is reported to `on_event` per phase
    (`generate:base`, `generate:tuned`, `loss:*`, `forgetting:*`, `generate:base-long-prompt`)."""
    from tunesmith.eval.forgetting import forgetting_for_comparison

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
    graders = build_graders(metrics, references, schema, on_event)
    names = [g.name for g in graders]
    main = main_metric or names[0]
    if main not in names and main not in LOSS_METRICS:
        raise ConfigError(f"main metric {main!r} is not among the metrics {names}")
    if main in LOSS_METRICS and not loss:
        raise ConfigError(f"main metric {main} needs the held-out loss")

    t = time.perf_counter()
    tuned_lm = load_for_eval(tuned, on_event)
    base_lm = load_for_eval(base, on_event) if base is not None else None
    timings["load_seconds"] = time.perf_counter() - t
    if max_new_tokens is None:
        max_new_tokens = default_max_new_tokens(tuned_lm.tokenizer, references)
    prompts = [list(e.prompt) for e in examples]
    gen = {"max_new_tokens": max_new_tokens, "seed": seed, "batch_size": batch_size}

    base_out: list[str] | None = None
    if base_lm is not None:
        t = time.perf_counter()
        base_out = answer(
            base_lm,
            prompts,
            on_event=on_event,
            phase="generate:base",
            text="base model: answering",
            **gen,
        )
        timings["base_generate_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    tuned_out = answer(
        tuned_lm,
        prompts,
        on_event=on_event,
        phase="generate:tuned",
        text="tuned model: answering",
        **gen,
    )
    timings["tuned_generate_seconds"] = time.perf_counter() - t

    results: list[ExampleResult] = []
    for i, ex in enumerate(examples):
        item = Item(ex.reference, ex.prompt)
        scores = _grade(graders, tuned_out[i], item)
        row = ExampleResult(i, ex.source, list(ex.prompt), ex.reference, tuned_out[i], scores)
        if base_out is not None:
            row.base_output = base_out[i]
            row.base_scores = _grade(graders, base_out[i], item)
        results.append(row)

    comparisons: dict[str, MetricComparison] = {}
    for g in graders:
        b = [r.base_scores[g.name] for r in results] if base_out is not None else None  # type: ignore[index]
        comparisons[g.name] = compare_scores(g, b, [r.tuned_scores[g.name] for r in results], seed)
    if loss:
        t = time.perf_counter()
        b_loss = _losses(base_lm, examples, on_event, "base") if base_lm is not None else None
        t_loss = _losses(tuned_lm, examples, on_event, "tuned")
        comparisons.update(_loss_comparisons(b_loss, t_loss, seed))
        timings["loss_seconds"] = time.perf_counter() - t

    forgetting = forgetting_for_comparison(
        base_lm, tuned_lm, reference, forgetting_threshold, timings, on_event
    )

    prompt_cost = None
    if long_prompt and base_lm is not None:
        from tunesmith.eval.prompt_cost import measure_prompt_cost

        t = time.perf_counter()
        k = len(examples) if prompt_cost_limit is None else max(1, prompt_cost_limit)
        prompt_cost = measure_prompt_cost(
            base_lm,
            tuned_lm,
            examples[:k],
            results[:k],
            graders,
            main,
            long_prompt,
            tuned_seconds_per_request=timings["tuned_generate_seconds"] / len(examples),
            on_event=on_event,
            **gen,
        )
        timings["prompt_cost_seconds"] = time.perf_counter() - t

    timings["total_seconds"] = time.perf_counter() - t_all
    result = ComparisonResult(
        main_metric=main,
        metrics=comparisons,
        examples=results,
        base_model=label(base_lm) if base_lm is not None else None,
        tuned_model=label(tuned_lm),
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


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def _read_run(run: RunDir) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, config) of a run; a ConfigError when `run` holds neither. The config is
    read like any config file (no YAML bombs, errors naming the file)."""
    from tunesmith.config import read_yaml

    if not run.manifest_path.is_file() and not run.config.is_file():
        raise ConfigError(
            f"{run.path} is not a run directory (no {run.manifest_path.name} or {run.config.name})",
            hint="pass the directory `tunesmith train` wrote",
        )
    config = read_yaml(run.config)[0] if run.config.is_file() else {}
    return run.manifest(), config


def run_heldout(run_dir: str | Path | RunDir, config: dict[str, Any]) -> list[EvalExample] | Path:
    """The run's validation data: its `data.validation` file, the same seeded split of the
    training file that training held out with `data.validation_fraction`, or else the file an
    earlier comparison of this run used (its eval/results.json)."""
    from tunesmith.eval.report import results_path

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    data = config.get("data") or {}
    if data.get("validation"):
        path = Path(data["validation"])
        return path if path.is_absolute() or path.exists() else run.path / path
    if data.get("validation_fraction") and data.get("train"):
        from tunesmith.data.prepare import heldout_split, read_records
        from tunesmith.data.quality import record_key

        train = Path(data["train"])
        everything = load_examples(train)
        keys = [record_key(r) for r in read_records(train, data.get("format"))]
        if data.get("dedupe"):  # the rows training kept: each repeat dropped, first copy kept
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            kept = [i for i, k in enumerate(keys) if first[k] == i]
            everything, keys = [everything[i] for i in kept], [keys[i] for i in kept]
        _, held = heldout_split(
            keys, float(data["validation_fraction"]), int(config.get("seed", 0))
        )
        return [everything[i] for i in held]
    previous = results_path(run.eval_dir)
    if previous.is_file():
        from tunesmith.io import read_json

        try:
            earlier = read_json(previous).get("data")
        except (OSError, ValueError, AttributeError):
            earlier = None
        if earlier and Path(earlier).is_file():
            return Path(earlier)
    raise DataError(f"run {run.path} has no validation data", hint="pass --data HELD_OUT.jsonl")


def _base_of(run: RunDir, manifest: dict[str, Any], config: dict[str, Any], report: Reporter):
    """The base model the run started from: its resolved path while that still exists, else
    the name it was given (which the registry resolves again)."""
    base = run.base_model() or config.get("model")
    if base and base == manifest.get("base_model_path") and not Path(str(base)).exists():
        fallback = manifest.get("base_model") or config.get("model")
        report(
            events.message(
                f"the run's base model path {base} no longer exists; using {fallback}",
                phase="compare",
                level="warning",
            )
        )
        base = fallback
    if not base:
        raise ConfigError(f"run {run.path} does not say which base model it started from")
    return base


def compare_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    output_dir: str | Path | None = None,
    on_event: Reporter | None = None,
    trust_run_config: bool = False,
    **options: Any,
) -> ComparisonResult:
    """Compare a finished run's model with its base model on held-out data.

    Defaults come from the run: the base model from its manifest, held-out data from its config
    (`data.validation` or the validation split), metrics/schema/reference/long prompt from its
    `eval` section when present. Other `options` are those of `compare_models`.

    `run_dir` may name one of the run's checkpoints (`RUN@step-N`, `RUN@best`, `RUN@latest`,
    `RUN/checkpoints/step-N`): that checkpoint is compared instead of final/. Reports go to
    `output_dir`; by default, the comparison of final/ on the run's own held-out data goes to
    the run's eval/, and anything else (other data, a checkpoint) to a new folder of its own,
    `RUN/evals/<data or step>-<time>/`, so the training-time report is never replaced.

    A run directory may come from someone else: a code grader (`file.py:function`) named in
    its config is imported only with `trust_run_config=True`; the caller's own `metrics` are
    always used."""
    from tunesmith.runs import checkpoint_ref

    checkpoint = checkpoint_ref(run_dir)
    run = checkpoint[0] if checkpoint is not None else RunDir(run_dir)
    options = {k: v for k, v in options.items() if v is not None}  # unset: the run decides
    report = events.reporter(on_event)
    manifest, config = _read_run(run)
    raw_eval = config.get("eval")
    eval_cfg: dict[str, Any] = raw_eval if isinstance(raw_eval, dict) else {}
    if "metrics" not in options and not trust_run_config:
        _refuse_run_code(run, eval_cfg.get("metrics"))
    base = _base_of(run, manifest, config, report)
    tuned: str | Path = run.final if run.has_final() else run.path
    if checkpoint is not None:
        step, _ = run.resolve_checkpoint(checkpoint[1])
        tuned = str(run_dir)  # the model registry turns it into base + checkpoint weights
        output_dir = output_dir or run.new_eval_dir(
            f"step-{step}" + (f"-{Path(data).stem}" if data is not None else "")
        )
    elif data is not None and not _is_own_heldout(run, config, Path(data)):
        output_dir = output_dir or run.new_eval_dir(data)
    started_on = (manifest.get("base_adapter") or {}).get("path")
    if started_on and Path(started_on).is_dir():  # trained on top of an adapter: its model
        base = started_on
    if manifest.get("method") == "reinforcement" or (
        (config.get("method") or {}).get("type") == "reinforcement"
    ):
        return _compare_reinforcement(
            run, config, tuned, base, data, output_dir, on_event, trust_run_config, options
        )
    examples = Path(data) if data is not None else run_heldout(run, config)
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
    if isinstance(options.get("schema"), (str, Path)):
        options["schema"] = load_schema(options["schema"])
    if _looks_like_file(options.get("long_prompt")):
        options["long_prompt"] = Path(options["long_prompt"]).read_text(encoding="utf-8")
    if manifest.get("method") not in PREFERENCE_METHODS:
        return compare_models(
            tuned,
            base,
            examples,
            on_event=on_event,
            output_dir=output_dir or run.eval_dir,
            run_dir=run.path,
            **options,
        )
    # DPO / ORPO: also how often each model prefers the chosen answer (eval/preference.py)
    from tunesmith.eval.preference import heldout_pairs, method_beta, preference_comparison
    from tunesmith.eval.report import write_reports

    main = options.pop("main_metric", None)
    result = compare_models(tuned, base, examples, on_event=on_event, run_dir=run.path, **options)
    pairs = heldout_pairs(config, data)[: options.get("limit")]
    result.metrics.update(
        preference_comparison(
            tuned,
            base,
            pairs,
            beta=method_beta(config),
            seed=int(options.get("seed", 0)),
            on_event=on_event,
        )
    )
    if main is not None and main not in result.metrics:
        raise ConfigError(f"main metric {main!r} is not among the metrics {list(result.metrics)}")
    result.main_metric = main or "preference_accuracy"
    write_reports(result, Path(output_dir or run.eval_dir))
    return result


def _compare_reinforcement(
    run: RunDir,
    config: dict[str, Any],
    tuned: Any,
    base: Any,
    data: str | Path | None,
    output_dir: str | Path | None,
    on_event: Reporter | None,
    trust_run_config: bool,
    options: dict[str, Any],
) -> ComparisonResult:
    """An RL run: the mean reward of its own grader on held-out prompts, base vs tuned, with
    the run's sampling settings (eval/reinforcement.py)."""
    from tunesmith.eval.reinforcement import (
        DEFAULT_LIMIT,
        heldout_prompts,
        reward_comparison,
        run_grader_object,
    )
    from tunesmith.eval.report import write_reports

    grader = run_grader_object(config, run.config, trust_run_config=trust_run_config)
    rl = (config.get("method") or {}).get("reinforcement") or {}
    prompts = heldout_prompts(config, data, base_dir=run.path)
    limit = options.get("limit")
    prompts = prompts[: limit if limit is not None else DEFAULT_LIMIT]
    eval_cfg = config.get("eval") if isinstance(config.get("eval"), dict) else {}
    reference = options.get("reference", (eval_cfg or {}).get("reference"))
    result = reward_comparison(
        tuned,
        base,
        prompts,
        grader,
        allow_python=trust_run_config,
        samples=int(rl.get("eval_samples") or 1),
        temperature=float(rl.get("temperature") or 1.0),
        max_new_tokens=int(options.get("max_new_tokens") or rl.get("max_new_tokens") or 256),
        seed=int(options.get("seed", 0)),
        batch_size=int(options.get("batch_size", EVAL_BATCH_ROWS)),
        reference=reference,
        forgetting_threshold=options.get("forgetting_threshold"),
        on_event=on_event,
        data_label=str(Path(data).expanduser().resolve())
        if data is not None
        else "held-out prompts",
        run_dir=run.path,
    )
    write_reports(result, Path(output_dir or run.eval_dir))
    return result


def _is_own_heldout(run: RunDir, config: dict[str, Any], data: Path) -> bool:
    """`data` is the run's own held-out file (its comparison then stays in eval/)."""
    try:
        own = run_heldout(run, config)
    except DataError:
        return False
    try:
        return isinstance(own, Path) and own.resolve() == data.expanduser().resolve()
    except OSError:
        return False


def _refuse_run_code(run: RunDir, metrics: Any) -> None:
    """A ConfigError when the run's saved config names a code grader: importing it would run
    whatever code the run's author put there."""
    names = metrics.split(",") if isinstance(metrics, str) else metrics
    if not isinstance(names, list):
        return
    code = [str(m).strip() for m in names if isinstance(m, str) and is_code_grader(m)]
    if code:
        from tunesmith.errors import where

        raise ConfigError(
            f"the run's config names the code grader {code[0]!r}; code named by a run "
            "directory is not imported unless you say so (it may not be yours)",
            where=where(run.config, field="eval.metrics"),
            hint="if you trust this run, pass --trust-run-config (api: trust_run_config=True); "
            "or choose the metrics yourself with --metrics",
            param="eval.metrics",
        )


def _looks_like_file(value: Any) -> bool:
    """A config value that names a file (rather than holding the text itself)."""
    if not isinstance(value, (str, Path)) or "\n" in str(value) or len(str(value)) > 1024:
        return False
    try:
        return Path(value).is_file()
    except OSError:
        return False


def load_schema(path: str | Path) -> dict[str, Any]:
    """A JSON schema file for the json_schema grader (a ConfigError saying what is wrong)."""
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
