"""`tunesmith eval`, `tunesmith compare` and `tunesmith demo`.

    tunesmith eval MODEL_OR_RUN --data HELD_OUT [--metrics a,b] [--baseline MODEL]
    tunesmith compare RUN_DIR [--data HELD_OUT]
    tunesmith demo [--output-dir DIR]

All three end with the same table (base vs tuned, 95% CI, verdict) and say where the reports
are. Progress is drawn by `EventView` from the events the api calls report. No torch import
here: everything heavy happens behind `tunesmith.api`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from tunesmith.auto import EVAL_BATCH_ROWS
from tunesmith.cli.app import app, console
from tunesmith.cli.progress import EventView
from tunesmith.demo import DEMO_MAX_STEPS

METRICS_HELP = (
    "Comma-separated: exact_match, contains, regex:PATTERN, json_valid, json_schema, "
    "json_match, json_fields, json_key:KEY, choice[:a|b], rouge_l, length, or module:function "
    "(default: chosen from the reference answers)."
)


TRUST_HELP = (
    "Import the code graders (file.py:function) the run's config.yaml names under eval.metrics. "
    "A run directory may be someone else's: without this flag they are refused."
)


def print_comparison(result: Any) -> None:
    """The base-vs-tuned table, the verdict, the forgetting line, the prompt-cost line."""
    from tunesmith.eval.report import REPORT_FILES, TABLE_HEADER, table_rows

    table = Table(title=f"base vs tuned on {result.n} held-out examples")
    for col in TABLE_HEADER:
        table.add_column(
            col,
            justify="right" if col in ("base", "tuned", "difference") else "left",
            overflow="fold",
        )
    for row, metric in zip(table_rows(result), result.metrics.values(), strict=False):
        colour = {True: "green", False: "red", None: ""}[metric.better]
        verdict = f"[{colour}]{row[5]}[/]" if colour else row[5]
        table.add_row(
            *row[:5], verdict, style="bold" if metric.name == result.main_metric else None
        )
    console.print(table)
    colour = {True: "green", False: "red", None: "yellow"}[result.main.better]
    console.print(f"[bold {colour}]{result.verdict()}[/]", highlight=False)
    if result.forgetting is not None:
        colour = "yellow" if result.forgetting.warning else "dim"
        console.print(f"[{colour}]{result.forgetting.message}[/]", highlight=False)
    pc = result.prompt_cost
    if pc is not None:
        console.print(
            f"prompt cost ({pc.n} examples, {pc.metric}): base + long prompt "
            f"{100 * pc.base_long_score:.1f}% at "
            f"{pc.base_long_prompt_tokens + pc.base_long_output_tokens:.0f} tokens/request vs "
            f"tuned + short prompt {100 * pc.tuned_short_score:.1f}% at "
            f"{pc.tuned_short_prompt_tokens + pc.tuned_short_output_tokens:.0f} tokens/request "
            f"({pc.token_saving:.0%} fewer tokens)",
            highlight=False,
        )
    if result.output_dir is not None:
        out = Path(result.output_dir)
        names = [REPORT_FILES[k] for k in ("html", "markdown", "json")]
        console.print("reports: " + "  ".join(str(out / n) for n in names), highlight=False)


def _metrics(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [m.strip() for m in value.split(",") if m.strip()]


def _reference(value: str | None, no_forgetting: bool) -> Any:
    if no_forgetting:
        return False
    return value


@app.command("eval")
def eval_command(
    model: str = typer.Argument(
        ..., help="Model to evaluate: alias, HF dir, run dir, adapter, RUN@step-N/best/latest."
    ),
    data: Path = typer.Option(..., "--data", "-d", help="Held-out chat JSONL (any data format)."),
    metrics: str | None = typer.Option(None, "--metrics", "-m", help=METRICS_HELP),
    baseline: str | None = typer.Option(
        None, help="Model to compare against (default for a run dir: its base model)."
    ),
    main_metric: str | None = typer.Option(None, help="Metric the verdict is about."),
    schema: Path | None = typer.Option(None, help="JSON schema file for json_schema."),
    output_dir: Path | None = typer.Option(
        None,
        help="Where reports go (default: a new folder per evaluation, RUN_DIR/evals/DATA-TIME "
        "for a run, else ./tunesmith-eval/DATA-TIME; RUN_DIR/eval is the training-time report "
        "and is never replaced).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace the report already in --output-dir."
    ),
    max_new_tokens: int | None = typer.Option(None, min=1, help="Default: from the references."),
    batch_size: int = typer.Option(EVAL_BATCH_ROWS, min=1, help="Prompts per batch, at most."),
    limit: int | None = typer.Option(None, min=1, help="Only the first N examples."),
    reference: str | None = typer.Option(
        None, help="Forgetting reference set: bundled (default), sharegpt, or a chat file."
    ),
    no_forgetting: bool = typer.Option(False, "--no-forgetting", help="Skip the forgetting check."),
    forgetting_threshold: float = typer.Option(0.10, min=0.0),
    long_prompt: Path | None = typer.Option(
        None, help="Text file with the long prompt used with the base model (prompt-cost view)."
    ),
    seed: int = typer.Option(0),
    trust_run_config: bool = typer.Option(False, "--trust-run-config", help=TRUST_HELP),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Evaluate a model on held-out data, against a baseline when there is one."""
    from tunesmith import api
    from tunesmith.runs import RunDir, checkpoint_ref, new_eval_dir

    out = output_dir
    if out is None and not (RunDir.is_run(model) or checkpoint_ref(model)):
        out = new_eval_dir("tunesmith-eval", data)  # a run's own folder is the api's to pick
    options: dict[str, Any] = {
        "main_metric": main_metric,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "limit": limit,
        "reference": _reference(reference, no_forgetting),
        "forgetting_threshold": forgetting_threshold,
        "seed": seed,
    }
    if schema is not None:
        options["schema"] = schema
    if long_prompt is not None:
        options["long_prompt"] = _read_text(long_prompt)
    with EventView(bars=progress) as view:
        result = api.evaluate(
            model,
            data,
            baseline=baseline,
            metrics=_metrics(metrics),
            output_dir=out,
            on_event=view,
            trust_run_config=trust_run_config,
            force=force,
            **options,
        )
    print_comparison(result)


@app.command()
def compare(
    run_dir: Path = typer.Argument(
        ..., help="A run directory written by `tunesmith train`, or RUN@step-N/best/latest."
    ),
    data: Path | None = typer.Option(
        None, "--data", "-d", help="Held-out data (default: the run's validation data)."
    ),
    metrics: str | None = typer.Option(None, "--metrics", "-m", help=METRICS_HELP),
    main_metric: str | None = typer.Option(None, help="Metric the verdict is about."),
    schema: Path | None = typer.Option(None, help="JSON schema file for json_schema."),
    output_dir: Path | None = typer.Option(None, help="Default: RUN_DIR/eval."),
    max_new_tokens: int | None = typer.Option(None, min=1),
    limit: int | None = typer.Option(None, min=1, help="Only the first N examples."),
    reference: str | None = typer.Option(None, help="bundled (default), sharegpt, or a file."),
    no_forgetting: bool = typer.Option(False, "--no-forgetting", help="Skip the forgetting check."),
    long_prompt: Path | None = typer.Option(None, help="Long base-model prompt (text file)."),
    trust_run_config: bool = typer.Option(False, "--trust-run-config", help=TRUST_HELP),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Compare a run's tuned model with its base model (tables, CIs, report)."""
    from tunesmith import api

    options: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "limit": limit,
        "reference": _reference(reference, no_forgetting),
    }
    if main_metric:
        options["main_metric"] = main_metric
    if metrics:
        options["metrics"] = _metrics(metrics)
    if schema is not None:
        options["schema"] = str(schema)
    if long_prompt is not None:
        options["long_prompt"] = _read_text(long_prompt)
    with EventView(bars=progress) as view:
        result = api.compare(
            run_dir, data, output_dir=output_dir, on_event=view,
            trust_run_config=trust_run_config, **options,
        )  # fmt: skip
    print_comparison(result)


@app.command()
def demo(
    output_dir: Path = typer.Option(Path("tunesmith-demo"), help="Where the run goes."),
    max_steps: int | None = typer.Option(
        None, min=1, help=f"Training steps (default {DEMO_MAX_STEPS})."
    ),
    no_prompt_cost: bool = typer.Option(
        False, "--no-prompt-cost", help="Skip the prompt-cost view (faster)."
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Fine-tune the default model on the bundled ticket-to-JSON task and prove it improved."""
    from tunesmith.demo import run_demo

    options: dict[str, Any] = {"prompt_cost": not no_prompt_cost}
    if max_steps is not None:
        options["max_steps"] = max_steps
    with EventView(bars=progress) as view:
        result = run_demo(output_dir, on_event=view, **options)
    print_comparison(result.comparison)
    console.print(
        f"run: {result.run_dir}\ncomparison: {result.eval_dir}\n"
        f"open the report: {result.report_html}\n"
        f"demo took {result.seconds.get('total', 0) / 60:.1f} min "
        f"(train {result.seconds.get('train', 0):.0f} s, compare "
        f"{result.seconds.get('compare', 0):.0f} s)",
        highlight=False,
    )


def _read_text(path: Path) -> str:
    from tunesmith.errors import ConfigError

    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
