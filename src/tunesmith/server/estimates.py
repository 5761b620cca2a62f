"""What a job would train with and how long it would take, before it is launched
(`POST /v1/tunesmith/fine_tuning/estimates`, the job-creation body).

The numbers are the data validator's (`tunesmith.api.validate_data(..., estimate=True)`: the
trainer's automatic rules applied to this data under the operator's data settings, and a
training-time estimate from this machine's measured speed). This module only says which of
them the job would fix instead — a value the request gives, or the operator's `job_defaults`
(the worker builds a job's run spec the same way: defaults first, then the request) — and
passes every other field through unchanged, so fields the validator adds later reach the
client without a change here. Explanations the validator gives (a dict of reasons by name, or
a list of sentences, inside `hyperparameters` or `estimate`) are lifted into `explanations`
and `notes`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

# OpenAI's hyperparameter names -> the run spec's (what the worker sets from each).
REQUEST_KEYS = {
    "n_epochs": "epochs",
    "batch_size": "batch_size",
    "learning_rate_multiplier": "lr_multiplier",
}
# Run-spec keys an operator's job_defaults may fix, which the estimate's plan also resolves.
SPEC_KEYS = ("epochs", "batch_size", "grad_accum", "learning_rate", "lr_multiplier")
CACHE_S = 300.0  # an estimate is kept this long (files never change; the machine's speed may)
CACHE_MAX = 32


def fixed_values(job_defaults: dict[str, Any], hyper: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Run-spec values the job would not leave to the automatic rules: {key: {value, by}},
    `by` "request" (the body's hyperparameters) or "server" (the operator's job_defaults)."""
    out: dict[str, dict[str, Any]] = {}
    for key in SPEC_KEYS:
        value = job_defaults.get(key, "auto")
        if value not in ("auto", None):
            out[key] = {"value": value, "by": "server"}
    for name, key in REQUEST_KEYS.items():
        value = hyper.get(name, "auto")
        if value not in ("auto", None):
            out[key] = {"value": value, "by": "request"}
    return out


def _lift(block: dict[str, Any] | None, explanations: dict[str, str], notes: list[str]) -> Any:
    """`block` without its explanation entries (a dict of str reasons, a list of str), which go
    to `explanations` / `notes`."""
    if not isinstance(block, dict):
        return block
    out = {}
    for key, value in block.items():
        if isinstance(value, dict) and value and all(isinstance(v, str) for v in value.values()):
            explanations.update(value)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            notes.extend(value)
        else:
            out[key] = value
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def shape(
    report: dict[str, Any], *, method: str, hyper: dict[str, Any], job_defaults: dict[str, Any]
) -> dict[str, Any]:
    """The estimate object's fields from a validation report (`ValidationReport.to_dict()`)."""
    explanations: dict[str, str] = {}
    notes: list[str] = []
    plan = _lift(report.get("hyperparameters"), explanations, notes)
    estimate = _lift(report.get("estimate"), explanations, notes)
    fixed = fixed_values(job_defaults, hyper)
    for key, entry in fixed.items():
        if isinstance(plan, dict) and key in plan:
            entry["auto"] = plan[key]
    seconds = _number((estimate or {}).get("seconds"))
    auto_epochs = _number((plan or {}).get("epochs"))
    given = _number(fixed.get("epochs", {}).get("value"))
    if seconds is not None and auto_epochs and given and given != auto_epochs:
        # the training steps scale with the epochs; set-up and the like do not
        steps = _number((estimate or {}).get("train_seconds"))
        steps = seconds if steps is None else min(steps, seconds)
        seconds = seconds - steps + steps * given / auto_epochs
        who = "you set it" if fixed["epochs"]["by"] == "request" else "the server sets it"
        notes.append(
            f"epochs = {given:g} ({who}), not the automatic {auto_epochs:g}: the training "
            "part of the time is scaled to it"
        )
    for key, entry in fixed.items():
        if key != "epochs":
            by = "you set" if entry["by"] == "request" else "the server sets"
            notes.append(f"{key} = {entry['value']}: {by} it, instead of the automatic value")
    if fixed and isinstance(plan, dict):
        notes.append(
            "the step counts shown are the automatic plan's; the fixed values change them, "
            "and the job page shows what the run resolves once it starts"
        )
    if estimate is None:
        notes.append(
            "no time estimate for reinforcement jobs yet: their cost is sampling answers"
            if method == "reinforcement"
            else "no time estimate: the model's size or the token counts are unknown"
        )
    stats = report.get("stats") or {}
    problems = [
        (f"line {e['line']}: " if e.get("line") is not None else "")
        + (f"{e['field']}: " if e.get("field") else "")
        + str(e.get("message"))
        for e in (report.get("errors") or [])[:20]
    ]
    return {
        "ok": bool(report.get("ok")),
        "problems": problems,
        "requested": hyper,
        "hyperparameters": plan,
        "fixed": fixed,
        "explanations": explanations,
        "estimate": estimate,
        "seconds": None if seconds is None else round(seconds, 1),
        "notes": notes,
        "data": {
            "rows_read": report.get("rows_read"),
            "rows_ok": report.get("rows_ok"),
            "warning_count": report.get("warning_count"),
            "examples": stats.get("examples"),
            "tokens": stats.get("tokens"),
            "files": [
                {k: v for k, v in f.items() if k not in ("path", "sha256")}
                for f in report.get("files") or []
            ],
        },
    }


def estimate(
    settings: Any,
    cache: dict[str, tuple[float, dict[str, Any]]],
    *,
    model: str,
    method: str,
    hyper: dict[str, Any],
    train: Any,
    validation: Any | None,
) -> dict[str, Any]:
    """Validate the job's files as its run would read them (tokenizer of the base model, the
    operator's data settings) with the estimate on, and shape the answer; kept `CACHE_S`."""
    from tunesmith import api
    from tunesmith.server.filecheck import run_data_settings

    target = str(settings.models[model])
    options = run_data_settings(settings, target)
    key = json.dumps(
        [target, options, method, hyper, train.id, validation and validation.id,
         settings.job_defaults],
        sort_keys=True, default=str,
    )  # fmt: skip
    hit = cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < CACHE_S:
        return hit[1]
    adapter = options.pop("adapter")
    report = api.validate_data(
        Path(train.path),
        model=target,
        validation=Path(validation.path) if validation is not None else None,
        estimate=True,
        method=method,
        adapter=adapter,
        **options,
    ).to_dict()
    out = shape(report, method=method, hyper=hyper, job_defaults=settings.job_defaults)
    while len(cache) >= CACHE_MAX:
        cache.pop(next(iter(cache)))
    cache[key] = (time.monotonic(), out)
    return out
