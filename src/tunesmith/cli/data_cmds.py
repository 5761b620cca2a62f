"""`tunesmith data ...`: validate, preview, convert and split data files.

A thin layer over `tunesmith.api`; no torch/transformers imports here (keeps --help fast).
`validate` exits 0 when the data is usable and 2 when it has errors, after printing all of them
(the first `MAX_SHOWN`, then a count; `--json` prints the full report, also when the command
cannot start: then `ok` is false and the one error says why).

User errors are printed here as plain text (never as rich markup: a key named "[/b]" in a
user's file must not crash the printer) on one line, exit code 2. On a terminal that cannot
show UTF-8 the symbols fall back to ASCII and unprintable user text becomes "?".
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from tunesmith.cli.app import app, console, err_console
from tunesmith.cli.progress import EventView
from tunesmith.errors import ConfigError, ModelError, TunesmithError

DEFAULT_MODEL = "smollm2-135m-instruct"
MAX_SHOWN = 50
PROGRESS_MIN_BYTES = 2 << 20

data_app = typer.Typer(
    help="Check, preview, convert and split training data.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

FORMAT_HELP = (
    "Force the input format (default: auto-detect): chat, alpaca, prompt_completion, "
    "input_output, sharegpt, openai_dpo, preference."
)


SYMBOLS = {"×": "x", "✓": "OK", "✗": "X", "⟦": "[[", "⟧": "]]", "─": "-", "→": "->"}
_ascii = False


def _safe_streams() -> None:
    """On a non-UTF-8 terminal, print ASCII symbols and replace what cannot be shown."""
    global _ascii
    _ascii = False
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "utf-8"
        try:
            "".join(SYMBOLS).encode(encoding)
        except (UnicodeEncodeError, LookupError):
            _ascii = True
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                with suppress(ValueError, OSError):
                    reconfigure(errors="replace")


def _t(text: str) -> str:
    """`text` with its symbols in ASCII when the terminal cannot show them."""
    if _ascii:
        for symbol, plain in SYMBOLS.items():
            text = text.replace(symbol, plain)
    return text


def _print_error(exc: TunesmithError) -> None:
    err_console.print(
        Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False, soft_wrap=True
    )


@contextmanager
def _user_errors() -> Iterator[None]:
    """Print a user error on one line (no markup, no traceback) and exit with its code."""
    _safe_streams()
    try:
        yield
    except TunesmithError as exc:
        _print_error(exc)
        raise typer.Exit(exc.exit_code) from None


def _failure_json(exc: TunesmithError, settings: dict[str, Any]) -> str:
    """The --json report of a validation that could not start or could not read its file."""
    from tunesmith.data.formats import RowError
    from tunesmith.data.report import Issue, ValidationReport

    report = ValidationReport(settings=settings)
    if isinstance(exc, RowError):
        report.add(Issue.from_error(exc))
    else:
        code = (
            "model"
            if isinstance(exc, ModelError)
            else "config"
            if isinstance(exc, ConfigError)
            else "unreadable"
        )
        report.add(Issue("error", code, exc.message, exc.where, None, None, exc.hint))
    return report.to_json(ensure_ascii=_ascii)


@contextmanager
def _events(path: Path, enabled: bool) -> Iterator[EventView | None]:
    """The validation's event view (progress bars on stderr) for large files only: a small file
    is checked faster than a bar could be drawn. Yields None (no events shown) otherwise."""
    try:
        big = enabled and path.stat().st_size >= PROGRESS_MIN_BYTES
    except OSError:
        big = False
    if not big:
        yield None
        return
    with EventView(bars=True) as view:
        yield view


@data_app.command("validate")
def validate_cmd(
    file: Path = typer.Argument(..., help="Training data (.jsonl, .json, .csv, .parquet)."),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", "-m", help="Model whose chat template and tokenizer count tokens."
    ),
    max_seq_len: int | None = typer.Option(
        None,
        "--max-seq-len",
        help="Longest example, in tokens (default: the data.max_seq_len training uses).",
    ),
    val: Path | None = typer.Option(None, "--val", help="Validation file (checked for overlap)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    format: str | None = typer.Option(None, "--format", help=FORMAT_HELP),
    truncate: bool = typer.Option(
        False, "--truncate", help="Cut over-long examples instead of rejecting them."
    ),
    train_on: str = typer.Option(
        "assistant", "--train-on", help="Which tokens carry loss: assistant, last or all."
    ),
    no_tokens: bool = typer.Option(
        False, "--no-tokens", help="Check structure only (no model, no token counts)."
    ),
    method: str = typer.Option(
        "supervised",
        "--method",
        help="The training method the data is for (supervised, dpo, reinforcement); the "
        "report lists every method that can use the file.",
    ),
    dedupe: bool = typer.Option(
        False, "--dedupe", help="Drop exact repeats of a row (as data.dedupe: true does)."
    ),
    time_budget: str | None = typer.Option(
        None, "--time-budget", help="Say what `train --time-budget` (5m, 90s) would cut."
    ),
) -> None:
    """Check a data file before training. Exit 0 = usable, 2 = errors.

    Reports every bad row (line, field, reason), warnings, token statistics (prompt vs
    trained), the automatic hyperparameters and an estimate of the training time.
    """
    from tunesmith import api
    from tunesmith.config import DEFAULT_MAX_SEQ_LEN

    if max_seq_len is None:  # training's default, so the prediction is the run train makes
        max_seq_len = DEFAULT_MAX_SEQ_LEN
    _safe_streams()
    try:
        with _events(file, not as_json) as view:
            report = api.validate_data(
                file,
                model=None if no_tokens else model,
                validation=val,
                max_seq_len=max_seq_len,
                truncate=truncate,
                format=format,
                train_on=train_on,
                method=method,
                dedupe=dedupe,
                time_budget=time_budget,
                on_event=view,
            )
    except TunesmithError as exc:
        if as_json:
            settings = {
                "model": None if no_tokens else model,
                "max_seq_len": max_seq_len,
                "truncate": truncate,
                "train_on": train_on,
                "format": format or "auto",
                "dedupe": dedupe,
                "method": method,
            }
            typer.echo(_failure_json(exc, settings))
        else:
            _print_error(exc)
        raise typer.Exit(exc.exit_code) from None
    if as_json:
        typer.echo(report.to_json(ensure_ascii=_ascii))
    else:
        print_report(report)
    if not report.ok:
        raise typer.Exit(2)


def print_report(report: Any) -> None:
    """Human-readable report: files, errors, warnings, summary, hyperparameters, estimate."""
    for f in report.files:
        label = "validation" if f.role == "validation" else "train"
        style = "green" if f.rows_rejected == 0 else "red"
        trunc = f", {f.truncated} truncated" if f.truncated else ""
        trunc += f", {f.rows_dropped} duplicates dropped" if f.rows_dropped else ""
        console.print(
            Text.assemble(
                (f"{label}: ", "bold"),
                f"{f.path}  format {f.format or '?'}  ",
                (
                    f"{f.rows_read} rows read, {f.rows_ok} ok, {f.rows_rejected} rejected{trunc}",
                    style,
                ),
            )
        )
    _print_issues("error", report.errors, report.error_count, "red")
    _print_issues("warning", report.warnings, report.warning_count, "yellow")
    stats = report.stats or {}
    if stats.get("examples"):
        console.print(_stats_table(stats))
        if stats.get("labels"):
            labels = ", ".join(f"{k!r}: {v}" for k, v in stats["labels"].items())
            console.print(Text(f"labels: {labels}"))
    settings = report.settings or {}
    if stats.get("tokens") is not None:
        limit = settings.get("max_seq_len")
        if settings.get("truncate"):
            policy = f"cut to {limit} tokens (--truncate): {stats.get('truncated', 0)} truncated"
        else:
            policy = f"rejected (longer than {limit} tokens; --truncate cuts them instead)"
        console.print(Text(f"over-long examples are {policy}; loss on: {settings.get('train_on')}"))
    hp = report.hyperparameters
    if hp:
        epochs = hp["total_steps"] / max(1, hp["steps_per_epoch"])
        console.print(
            Text(
                _t(
                    f"auto hyperparameters ({hp['adapter']}): {hp['total_steps']} steps "
                    f"({epochs:.2g} epochs, {hp['passes']:,} example passes); "
                    f"{hp['rows']} packed rows of {hp['max_seq_len']} tokens, batch "
                    f"{hp['batch_size']} × accumulation {hp['grad_accum']} "
                    f"(~{hp['examples_per_step']:g} examples/step); learning rate "
                    f"{hp['learning_rate']:g}"
                )
            )
        )
        if hp.get("eval_every_steps"):
            console.print(
                Text(
                    f"validation every {hp['eval_every_steps']} steps on ≤ "
                    f"{hp['eval_max_tokens']:,} held-out tokens; early stopping "
                    + ("on" if hp.get("early_stopping") else "off")
                )
            )
        for key, why in (hp.get("notes") or {}).items():
            console.print(Text(f"  {key}: {why}", style="dim"))
    est = report.estimate
    if est:
        parts = [_duration(est["seconds"])]
        if est.get("compare_seconds") is not None:
            parts.append(f"then the base-vs-tuned comparison {_duration(est['compare_seconds'])}")
        console.print(
            Text(
                f"estimated training time on this machine: {', '.join(parts)} "
                f"({est['train_tokens']:,} tokens trained, {est['val_tokens']:,} validated, "
                f"{_count(est['n_params'])} parameters; from {est['basis']})"
            )
        )
        budget = est.get("time_budget")
        if budget:
            console.print(Text(f"time budget: {budget['message']}"))
        elif est.get("budget_hint"):
            console.print(Text(f"  {est['budget_hint']}", style="dim"))
    _print_methods(report)
    if report.ok:
        method = settings.get("method")
        usable = f" for method {method}" if method else ""
        console.print(Text(_t(f"✓ the data is usable{usable}"), style="bold green"))
    else:
        extra = (
            " (or pass --truncate for over-long rows)" if "too_long" in report.error_codes else ""
        )
        console.print(
            Text(
                _t(f"✗ {report.error_count} error(s): fix them before training{extra}"),
                style="bold red",
            )
        )


def _print_methods(report: Any) -> None:
    """Which training methods can use the data (and why the others cannot)."""
    methods = getattr(report, "methods", None) or {}
    if not methods:
        return
    parts = [
        _t(f"{m} ✓") if status == "usable" else _t(f"{m} ✗ ({status})")
        for m, status in methods.items()
    ]
    console.print(Text("methods: " + "; ".join(parts)), soft_wrap=True)


def _print_issues(kind: str, issues: list[Any], total: int, style: str) -> None:
    if not total:
        return
    console.print(Text(f"{total} {kind}{'s' if total != 1 else ''}:", style=f"bold {style}"))
    for issue in issues[:MAX_SHOWN]:
        where = issue.where + (f" [{issue.field}]" if issue.field else "")
        hint = f" ({issue.hint})" if issue.hint else ""
        console.print(
            Text.assemble("  ", (where, style), f": {issue.message}{hint}"), soft_wrap=True
        )
    if total > MAX_SHOWN:
        console.print(
            Text(f"  ... and {total - MAX_SHOWN} more {kind}s (use --json for all)", style=style)
        )


def _stats_table(stats: dict[str, Any]) -> Table:
    kind = " (preference pairs)" if stats.get("kind") == "preference" else ""
    table = Table(title=f"{stats['examples']} examples{kind}", title_justify="left")
    table.add_column("per example")
    for col in ("min", "mean", "p50", "p95", "max", "total"):
        table.add_column(col, justify="right")

    def row(name: str, s: dict[str, Any] | None) -> None:
        if s:
            table.add_row(
                name, *(f"{s[k]:g}" for k in ("min", "mean", "p50", "p95", "max")), f"{s['sum']:,}"
            )

    row("messages", stats.get("messages"))
    tokens = stats.get("tokens") or {}
    row("tokens", tokens.get("total"))
    row("  prompt (no loss)", tokens.get("prompt"))
    row("  trained", tokens.get("trained"))
    return table


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


@data_app.command("preview")
def preview_cmd(
    file: Path = typer.Argument(..., help="Data file."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model (chat template)."),
    n: int = typer.Option(3, "--n", "-n", help="How many examples."),
    format: str | None = typer.Option(None, "--format", help=FORMAT_HELP),
    train_on: str = typer.Option("assistant", "--train-on", help="assistant, last or all."),
    tokens: bool = typer.Option(False, "--tokens", help="Show token boundaries."),
    plain: bool = typer.Option(
        False, "--plain", help="Mark trained text with brackets instead of colour."
    ),
) -> None:
    """Render examples through the model's chat template and mark the tokens that carry loss."""
    from tunesmith import api

    with _user_errors():
        previews = api.preview_data(
            file, model=model, n=n, format=format, train_on=train_on, show_tokens=tokens
        )
    use_plain = plain or not console.is_terminal or console.no_color
    if use_plain:
        console.print(Text(_t("legend: ⟦trained text⟧ carries loss; everything else is context")))
    else:
        console.print(
            Text.assemble(
                "legend: ", ("trained (carries loss)", "bold black on green"), "  context (no loss)"
            )
        )
    for p in previews:
        kind = "" if p.kind == "sft" else f" ({p.kind})"
        console.print(
            Text(
                _t(f"── {p.source}{kind}: {p.n_tokens} tokens, {p.n_trained} trained"), style="bold"
            ),
            soft_wrap=True,
        )
        if use_plain:
            console.print(Text(p.marked(_t("⟦"), _t("⟧"))), soft_wrap=True)
            continue
        text = Text()
        for i, (piece, trained) in enumerate(p.spans):
            style = "bold black on green" if trained else ""
            if tokens:
                style += " underline" if i % 2 else ""
            text.append(piece, style=style.strip() or None)
        console.print(text, soft_wrap=True)


@data_app.command("convert")
def convert_cmd(
    src: Path = typer.Argument(..., help="Input data file, any supported format."),
    dst: Path = typer.Argument(..., help="Output .jsonl file."),
    to: str = typer.Option("chat", "--to", help="Target format (chat: OpenAI messages)."),
    format: str | None = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Convert a data file to OpenAI chat JSONL (preference pairs: OpenAI DPO format)."""
    from tunesmith import api

    with _user_errors():
        result = api.convert_data(src, dst, to=to, format=format)
    target = "openai_dpo" if result.format in ("openai_dpo", "preference") else to
    console.print(
        Text(_t(f"wrote {result.rows_written} rows ({result.format} → {target}) to {result.path}"))
    )


@data_app.command("split")
def split_cmd(
    src: Path = typer.Argument(..., help="Data file to split."),
    val: float = typer.Option(0.1, "--val", help="Fraction held out for validation."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed gives the same split."),
    train_out: Path | None = typer.Option(
        None, "--train-out", help="Default: NAME.train.jsonl beside the input."
    ),
    val_out: Path | None = typer.Option(
        None, "--val-out", help="Default: NAME.val.jsonl beside the input."
    ),
    format: str | None = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Split into training and validation files: deterministic, duplicates kept together."""
    from tunesmith import api

    with _user_errors():
        r = api.split_data(
            src, val=val, seed=seed, train_out=train_out, validation_out=val_out, format=format
        )
    console.print(
        Text(
            _t(
                f"train: {r.train_rows} rows → {r.train_path}\n"
                f"validation: {r.validation_rows} rows → {r.validation_path} "
                f"(seed {r.seed})"
            )
        )
    )


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
