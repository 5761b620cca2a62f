"""Base vs tuned on held-out prompts, scored by the run's own grader: the verdict of an RL run.

A reinforcement run is better when the tuned model earns more reward from the grader it was
trained against on prompts it never trained on. Both models answer every held-out prompt
(greedy, through their own chat templates, `answers.py`; with `samples` > 1 that many seeded
samples at `temperature`, averaged per prompt), the grader scores each answer beside the
prompt's item (the row's other fields), and the per-prompt rewards get a paired bootstrap
interval of tuned - base and its significance (`stats.py`), as every other metric does. A
multi grader's sub-graders each get their own row (`reward/<name>`). A grader that fails on
an answer (not the model's fault) scores 0 there and is counted in the metric's
`grader_errors`, so a broken grader is visible and never passes as a bad model. The
forgetting check runs alongside, as for SFT.

The grader comes from the run's config. A python grader is code: a run directory may be
someone else's, so it runs only with `trust_run_config=True` (`--trust-run-config`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tunesmith import events
from tunesmith.auto import EVAL_BATCH_ROWS
from tunesmith.data.records import Prompt
from tunesmith.errors import ConfigError, DataError
from tunesmith.eval.answers import label, load_for_eval
from tunesmith.eval.results import ComparisonResult, ExampleResult, MetricComparison
from tunesmith.eval.stats import bootstrap_mean, paired_bootstrap
from tunesmith.events import Reporter

DEFAULT_LIMIT = 200  # held-out prompts scored at most, unless asked for more


def read_prompts(path: str | Path) -> list[Prompt]:
    """The prompts of a reinforcement data file (OpenAI's RFT rows), with line-numbered errors."""
    from tunesmith.data.prepare import read_records

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"held-out file {path} does not exist", hint="pass --data PROMPTS.jsonl")
    prompts = [r for r in read_records(path, "prompts") if isinstance(r, Prompt)]
    if not prompts:
        raise DataError(f"no prompts in {path}")
    return prompts


def heldout_prompts(
    config: Mapping[str, Any], data: str | Path | None = None, *, base_dir: Path | None = None
) -> list[Prompt]:
    """The run's held-out prompts: `data` when given, else its validation file, else the same
    seeded split of the training file that training held out (`heldout_split`)."""
    if data is not None:
        return read_prompts(data)
    cfg = config.get("data") or {}
    if cfg.get("validation"):
        path = Path(cfg["validation"])
        if not path.is_absolute() and base_dir is not None and not path.exists():
            path = base_dir / path
        return read_prompts(path)
    if cfg.get("validation_fraction") and cfg.get("train"):
        from tunesmith.data.prepare import heldout_split
        from tunesmith.data.quality import record_key

        prompts = read_prompts(cfg["train"])
        keys = [record_key(p) for p in prompts]
        if cfg.get("dedupe"):  # the rows training kept: the first copy of each
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            kept = [i for i, k in enumerate(keys) if first[k] == i]
            prompts, keys = [prompts[i] for i in kept], [keys[i] for i in kept]
        _, held = heldout_split(keys, float(cfg["validation_fraction"]), int(config.get("seed", 0)))
        return [prompts[i] for i in held]
    raise DataError("the run has no held-out prompts", hint="pass --data PROMPTS.jsonl")


def run_grader_object(
    config: Mapping[str, Any], config_path: Path, *, trust_run_config: bool
) -> dict[str, Any]:
    """The grader object of a reinforcement run's config; a python grader only when trusted."""
    from tunesmith.errors import where
    from tunesmith.graders import uses_python

    block = ((config.get("method") or {}).get("reinforcement") or {}) if config else {}
    grader = block.get("grader") if isinstance(block, Mapping) else None
    if not isinstance(grader, Mapping) or not grader:
        raise ConfigError(
            "the run's config has no method.reinforcement.grader", param="method.reinforcement"
        )
    if uses_python(grader) and not trust_run_config:
        raise ConfigError(
            "the run's grader is a python grader; code named by a run directory is not run "
            "unless you say so (it may not be yours)",
            where=where(config_path, field="method.reinforcement.grader"),
            param="method.reinforcement.grader",
            hint="if you trust this run, pass --trust-run-config (api: trust_run_config=True)",
        )
    return dict(grader)


def _generate(
    lm: Any,
    prompts: Sequence[Prompt],
    *,
    samples: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
    on_event: Reporter | None,
    who: str,
) -> list[list[str]]:
    from tunesmith.data.formats import message_dicts
    from tunesmith.inference import GenerationSettings, generate

    convs = [message_dicts(p.messages) for p in prompts for _ in range(samples)]
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens,
        temperature=temperature if samples > 1 else 0.0,
        top_p=1.0,
        seed=seed,
        batch_size=batch_size,
    )
    flat = generate(
        lm.model,
        lm.tokenizer,
        convs,
        settings,
        on_event=on_event,
        phase=f"generate:{who}",
        text=f"{who} model: answering held-out prompts",
    )
    return [flat[i * samples : (i + 1) * samples] for i in range(len(prompts))]


def _score(
    grader: Any, subs: Sequence[str], prompts: Sequence[Prompt], outputs: Sequence[Sequence[str]]
) -> tuple[list[float], dict[str, list[float]], int]:
    """Per prompt: mean reward over its answers, each sub-grader's mean, and grader errors."""
    from tunesmith.data.formats import message_dicts
    from tunesmith.graders import GraderError, Item, Sample

    rewards: list[float] = []
    per_sub: dict[str, list[float]] = {s: [] for s in subs}
    errors = 0
    for prompt, answers in zip(prompts, outputs, strict=True):
        item = Item("", message_dicts(prompt.messages), prompt.item)
        total, sub_total = 0.0, dict.fromkeys(subs, 0.0)
        for text in answers:
            try:
                score, run = grader.run(Sample(text), item)
                total += float(score)
                for s in subs:
                    sub_total[s] += float(run.sub_rewards.get(s, 0.0))
            except GraderError:
                errors += 1
        rewards.append(total / max(1, len(answers)))
        for s in subs:
            per_sub[s].append(sub_total[s] / max(1, len(answers)))
    return rewards, per_sub, errors


def _metric(
    name: str,
    description: str,
    bounded: bool,
    base: list[float] | None,
    tuned: list[float],
    seed: int,
    details: dict[str, Any],
) -> MetricComparison:
    if base is None:
        value, ci = bootstrap_mean(tuned, seed=seed)
        return MetricComparison(
            name, description, True, bounded, None, value, None, ci, None, None, len(tuned),
            details,
        )  # fmt: skip
    r = paired_bootstrap(base, tuned, seed=seed)
    return MetricComparison(
        name, description, True, bounded, r.base, r.tuned, r.diff, r.ci, r.p_value,
        r.significant, r.n, details,
    )  # fmt: skip


def reward_comparison(
    tuned: Any,
    base: Any | None,
    prompts: Sequence[Prompt],
    grader: Mapping[str, Any],
    *,
    allow_python: bool = False,
    samples: int = 1,
    temperature: float = 1.0,
    max_new_tokens: int = 256,
    seed: int = 0,
    batch_size: int = EVAL_BATCH_ROWS,
    reference: str | Path | bool | None = None,
    forgetting_threshold: float | None = None,
    on_event: Reporter | None = None,
    data_label: str = "prompts",
    run_dir: str | Path | None = None,
) -> ComparisonResult:
    """Mean grader reward on held-out prompts, tuned vs base (paired bootstrap), plus the
    forgetting check unless `reference=False`. Names, paths or LoadedModels."""
    from tunesmith.eval.forgetting import forgetting_for_comparison
    from tunesmith.graders import build_grader_object, sub_grader_names

    if not prompts:
        raise DataError("no held-out prompts to evaluate on")
    built = build_grader_object(dict(grader), allow_python=allow_python)
    subs = sub_grader_names(grader)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    t = time.perf_counter()
    tuned_lm = load_for_eval(tuned, on_event)
    base_lm = load_for_eval(base, on_event) if base is not None else None
    timings["load_seconds"] = time.perf_counter() - t
    gen: dict[str, Any] = {
        "samples": samples,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "batch_size": batch_size,
        "on_event": on_event,
    }
    base_out = None
    if base_lm is not None:
        t = time.perf_counter()
        base_out = _generate(base_lm, prompts, who="base", **gen)
        timings["base_generate_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    tuned_out = _generate(tuned_lm, prompts, who="tuned", **gen)
    timings["tuned_generate_seconds"] = time.perf_counter() - t
    t_rewards, t_subs, t_err = _score(built, subs, prompts, tuned_out)
    b_rewards, b_subs, b_err = (
        _score(built, subs, prompts, base_out) if base_out is not None else (None, {}, 0)
    )
    name = str(grader.get("name") or "reward")
    details = {"grader": dict(grader), "samples_per_prompt": samples,
               "grader_errors": {"tuned": t_err, "base": b_err}}  # fmt: skip
    metrics = {
        name: _metric(
            name,
            f"mean reward of the run's {grader.get('type')} grader on held-out prompts",
            built.bounded,
            b_rewards,
            t_rewards,
            seed,
            details,
        )
    }
    for s in subs:
        metrics[f"reward/{s}"] = _metric(
            f"reward/{s}", f"sub-grader {s} of {name}", False,
            b_subs.get(s) if b_rewards is not None else None, t_subs[s], seed, {},
        )  # fmt: skip
    from tunesmith.data.formats import message_dicts

    examples: list[ExampleResult] = []
    for i, p in enumerate(prompts):
        row = ExampleResult(
            i,
            str(p.source or data_label),
            message_dicts(p.messages),
            json.dumps(p.item, ensure_ascii=False, default=str),
            tuned_out[i][0],
            {name: t_rewards[i]},
        )
        if base_out is not None and b_rewards is not None:
            row.base_output = base_out[i][0]
            row.base_scores = {name: b_rewards[i]}
        examples.append(row)
    forgetting = forgetting_for_comparison(
        base_lm, tuned_lm, reference, forgetting_threshold, timings, on_event
    )
    timings["total_seconds"] = time.perf_counter() - t_all
    if t_err or b_err:
        events.reporter(on_event)(
            events.message(
                f"the grader failed on {t_err} tuned and {b_err} base answers (scored 0)",
                phase="compare",
                level="warning",
            )
        )
    return ComparisonResult(
        main_metric=name,
        metrics=metrics,
        examples=examples,
        base_model=label(base_lm) if base_lm is not None else None,
        tuned_model=label(tuned_lm),
        data=data_label,
        settings={
            "max_new_tokens": max_new_tokens,
            "temperature": temperature if samples > 1 else 0.0,
            "samples_per_prompt": samples,
            "seed": seed,
            "batch_size": batch_size,
            "metrics": list(metrics),
        },
        forgetting=forgetting,
        timings=timings,
        run_dir=Path(run_dir) if run_dir else None,
    )
