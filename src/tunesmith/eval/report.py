"""Write a comparison as eval/results.json (machines), eval/report.md and eval/report.html (people).

The HTML report is one self-contained file — styles inline, plots as base64 PNG data URIs —
so it can be mailed, attached to a ticket or opened from a CI artefact with nothing beside it.
Every piece of user text (prompts, answers) is escaped: model output is untrusted input.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tunesmith.eval.plots import plot_base_vs_tuned, plot_differences, plot_loss_curves
from tunesmith.eval.results import (
    ComparisonResult,
    ExampleResult,
    MetricComparison,
    fmt_diff,
    fmt_value,
)
from tunesmith.events import Event, message
from tunesmith.io import atomic_write
from tunesmith.runs import RunDir

SAMPLES_EACH = 5
# What `write_reports` writes into the output directory.
REPORT_FILES = {"json": "results.json", "markdown": "report.md", "html": "report.html"}


def results_path(out_dir: Path) -> Path:
    """Where a comparison's machine-readable results are (an earlier run's, when reused)."""
    return Path(out_dir) / REPORT_FILES["json"]


# ---------------------------------------------------------------------------------------------
# Data for the report
# ---------------------------------------------------------------------------------------------


def read_training_metrics(run_dir: Path | None) -> list[dict[str, Any]]:
    """The run's logged training steps (bad lines skipped: a report must not fail on a log)."""
    if run_dir is None:
        return []
    return [
        row
        for row in RunDir(run_dir).read_metrics()
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float))
    ]


def example_delta(result: ComparisonResult, ex: ExampleResult) -> float:
    """How much better the tuned answer is than the base answer on the main metric."""
    m = result.main
    if ex.base_scores is None or m.name not in ex.tuned_scores:
        return 0.0
    delta = ex.tuned_scores[m.name] - ex.base_scores[m.name]
    return -delta if m.higher_is_better is False else delta


def wins_and_regressions(
    result: ComparisonResult, k: int = SAMPLES_EACH
) -> tuple[list[ExampleResult], list[ExampleResult]]:
    scored = [(example_delta(result, e), e.index, e) for e in result.examples]
    wins = [e for d, _, e in sorted(scored, key=lambda t: (-t[0], t[1])) if d > 0][:k]
    losses = [e for d, _, e in sorted(scored, key=lambda t: (t[0], t[1])) if d < 0][:k]
    return wins, losses


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------


def write_reports(result: ComparisonResult, out_dir: Path) -> dict[str, Path]:
    """Write results.json, report.md and report.html into `out_dir`; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.output_dir = out_dir
    paths = {kind: out_dir / name for kind, name in REPORT_FILES.items()}
    atomic_write(paths["json"], json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    atomic_write(paths["markdown"], render_markdown(result))
    atomic_write(paths["html"], render_html(result))
    return paths


def check_report_dir(out_dir: Path, *, force: bool = False) -> None:
    """Refuse, before any model is loaded, to write over an earlier report in `out_dir`
    unless `force`: an evaluation on other data must not silently replace one."""
    from tunesmith.errors import ConfigError

    found = [n for n in REPORT_FILES.values() if (Path(out_dir) / n).exists()]
    if found and not force:
        raise ConfigError(
            f"{out_dir} already holds a report ({', '.join(found)})",
            param="output_dir",
            hint="pick another --output-dir, leave it out (each evaluation then gets a folder "
            "of its own), or pass --force to replace it",
        )


def summary_events(result: ComparisonResult, phase: str = "compare") -> list[Event]:
    """What a person must see of a comparison they did not ask for by hand (the one that ends
    a training run): the verdict (a `result` event), every warning, and where the report is."""
    main = result.main
    verdict = Event(
        "result",
        phase=phase,
        message=result.verdict(),
        level="warning" if main.better is False else "info",
        data={
            "verdict": result.verdict(),
            "main_metric": result.main_metric,
            "improved": result.improved if result.base_model else None,
            "warnings": result.warnings(),
        },
    )
    out = [verdict]
    out += [message(w, phase=phase, level="warning") for w in result.warnings()]
    if result.forgetting is not None and not result.forgetting.warning:
        out.append(message(result.forgetting.message, phase=phase))
    if result.output_dir is not None:
        report = Path(result.output_dir) / REPORT_FILES["html"]
        others = ", ".join(REPORT_FILES[k] for k in ("markdown", "json"))
        out.append(message(f"report: {report} (also {others})", phase=phase, report=str(report)))
    return out


def _ci(m: MetricComparison) -> str:
    if m.base is None:
        return f"{fmt_value(m, m.ci[0])} .. {fmt_value(m, m.ci[1])}"
    return f"{fmt_diff(m, m.ci[0])} .. {fmt_diff(m, m.ci[1])}"


def table_rows(result: ComparisonResult) -> list[list[str]]:
    """Rows of the base-vs-tuned table (shared by the CLI, Markdown and HTML)."""
    rows = []
    for m in result.metrics.values():
        main = " (main)" if m.name == result.main_metric else ""
        rows.append(
            [
                m.name + main,
                fmt_value(m, m.base) if m.base is not None else "-",
                fmt_value(m, m.tuned),
                fmt_diff(m, m.diff) if m.diff is not None else "-",
                _ci(m),
                m.verdict,
            ]
        )
    return rows


TABLE_HEADER = ["metric", "base", "tuned", "difference", "95% CI", "verdict"]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def _prompt_text(ex: ExampleResult) -> str:
    return "\n".join(f"[{m['role']}] {m['content']}" for m in ex.prompt)


def render_markdown(result: ComparisonResult) -> str:
    lines = ["# tunesmith evaluation", "", f"**{result.verdict()}**", ""]
    lines += [f"- tuned model: `{result.tuned_model}`"]
    if result.base_model:
        lines += [f"- base model: `{result.base_model}`"]
    lines += [
        f"- held-out data: `{result.data}` ({result.n} examples)",
        f"- generation: greedy, max_new_tokens={result.settings.get('max_new_tokens')}, "
        f"seed={result.settings.get('seed')}",
        "",
    ]
    lines += [
        "## Base vs tuned",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "---|" * len(TABLE_HEADER),
    ]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in table_rows(result)]
    lines += [
        "",
        "Intervals: paired bootstrap over examples (2000 resamples); a difference is "
        "significant when its 95% interval excludes zero.",
        "",
    ]
    if result.forgetting is not None:
        lines += ["## Forgetting check", "", result.forgetting.message, ""]
    if result.prompt_cost is not None:
        pc = result.prompt_cost
        lines += [
            "## Prompt cost",
            "",
            "| setup | score | prompt tokens / request | output tokens / request "
            "| seconds / request |",
            "|---|---|---|---|---|",
            f"| base + long prompt | {100 * pc.base_long_score:.1f}% | "
            f"{pc.base_long_prompt_tokens:.0f} | {pc.base_long_output_tokens:.0f} | "
            f"{pc.base_long_seconds:.3f} |",
            f"| tuned + short prompt | {100 * pc.tuned_short_score:.1f}% | "
            f"{pc.tuned_short_prompt_tokens:.0f} | {pc.tuned_short_output_tokens:.0f} | "
            f"{pc.tuned_short_seconds:.3f} |",
            "",
            f"Tokens per request {pc.token_saving:+.0%} saved by the tuned model "
            f"({pc.metric}; difference CI {100 * pc.diff_ci[0]:+.1f} .. "
            f"{100 * pc.diff_ci[1]:+.1f} pts).",
            "",
        ]
    wins, regressions = wins_and_regressions(result)
    for title, items in (("Biggest wins", wins), ("Worst regressions", regressions)):
        if result.base_model is None:
            break
        lines += [f"## {title}", ""]
        if not items:
            lines += ["(none)", ""]
        for ex in items:
            lines += [
                f"### example {ex.index} ({ex.source})",
                "",
                "```text",
                _prompt_text(ex),
                "```",
                f"- reference: `{ex.reference}`",
                f"- base: `{ex.base_output}`",
                f"- tuned: `{ex.tuned_output}`",
                "",
            ]
    if result.timings:
        lines += ["## Timings", ""]
        lines += [f"- {k}: {v:.1f}" for k, v in result.timings.items()]
    return "\n".join(lines) + "\n"


CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1100px;color:#1d2733;line-height:1.45;padding:0 1rem}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #dde3ea;padding-bottom:.2rem}
.verdict{padding:.9rem 1.1rem;border-radius:8px;font-size:1.1rem;font-weight:600}
.good{background:#e3f4ef;border:1px solid #2a9d8f}.bad{background:#fde8e3;border:1px solid #e76f51}
.neutral{background:#eef1f4;border:1px solid #9aa5b1}
.warn{background:#fff4d6;border:1px solid #e9b949;padding:.6rem 1rem;border-radius:6px}
table{border-collapse:collapse;margin:.6rem 0;width:100%}
th,td{border:1px solid #dde3ea;padding:.35rem .6rem;text-align:left;vertical-align:top}
th{background:#f3f6f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.main td{font-weight:600}.better{color:#1f7a6f}.worse{color:#c0452a}
img{max-width:100%;height:auto;border:1px solid #eef1f4;border-radius:6px;margin:.4rem 0}
.samples td{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem;
white-space:pre-wrap;word-break:break-word}
.meta{color:#5b6876;font-size:.9rem}
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _img(b64: str | None, alt: str, ident: str) -> str:
    if not b64:
        return ""
    return f'<img id="{ident}" alt="{_esc(alt)}" src="data:image/png;base64,{b64}">'


def render_html(result: ComparisonResult) -> str:
    m = result.main
    klass = {True: "good", False: "bad", None: "neutral"}[m.better]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        "<title>tunesmith evaluation</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>tunesmith evaluation</h1>",
        f"<p class='meta'>tuned: <code>{_esc(result.tuned_model)}</code>"
        + (f" · base: <code>{_esc(result.base_model)}</code>" if result.base_model else "")
        + f" · data: <code>{_esc(result.data)}</code> ({result.n} examples) · greedy, "
        f"max_new_tokens={_esc(result.settings.get('max_new_tokens'))}</p>",
        f"<div id='verdict' class='verdict {klass}'>{_esc(result.verdict())}</div>",
    ]
    if result.forgetting is not None:
        f = result.forgetting
        parts.append(
            f"<p id='forgetting' class='{'warn' if f.warning else 'meta'}'>"
            f"{_esc(f.message)} — reference: {_esc(f.source)}</p>"
        )
    parts.append("<h2>Base vs tuned</h2><table id='metrics-table'><thead><tr>")
    parts += [f"<th>{_esc(h)}</th>" for h in TABLE_HEADER]
    parts.append("</tr></thead><tbody>")
    for row, metric in zip(table_rows(result), result.metrics.values(), strict=False):
        cls = " class='main'" if metric.name == result.main_metric else ""
        verdict_cls = {True: "better", False: "worse", None: ""}[metric.better]
        cells = [f"<td>{_esc(row[0])}</td>"]
        cells += [f"<td class='num'>{_esc(c)}</td>" for c in row[1:5]]
        cells.append(f"<td class='{verdict_cls}'>{_esc(row[5])}</td>")
        parts.append(f"<tr{cls}>{''.join(cells)}</tr>")
    parts.append(
        "</tbody></table><p class='meta'>Intervals: paired bootstrap over examples "
        "(2000 resamples, 95%). Significant = the interval excludes zero.</p>"
    )
    parts.append(_img(plot_base_vs_tuned(result), "base vs tuned bar chart", "plot-bars"))
    parts.append(
        _img(plot_differences(result), "differences with confidence intervals", "plot-diffs")
    )
    loss_png = plot_loss_curves(read_training_metrics(result.run_dir))
    if loss_png:
        parts.append("<h2>Training</h2>")
        parts.append(_img(loss_png, "training and validation loss curves", "plot-loss"))
    if result.prompt_cost is not None:
        pc = result.prompt_cost
        parts.append(
            "<h2>Prompt cost</h2><table id='prompt-cost'><thead><tr><th>setup</th>"
            f"<th>{_esc(pc.metric)}</th><th>prompt tokens / request</th>"
            "<th>output tokens / request</th><th>seconds / request</th></tr></thead>"
            "<tbody>"
        )
        for label, score, ptok, otok, sec in (
            (
                "base + long prompt",
                pc.base_long_score,
                pc.base_long_prompt_tokens,
                pc.base_long_output_tokens,
                pc.base_long_seconds,
            ),
            (
                "tuned + short prompt",
                pc.tuned_short_score,
                pc.tuned_short_prompt_tokens,
                pc.tuned_short_output_tokens,
                pc.tuned_short_seconds,
            ),
        ):
            parts.append(
                f"<tr><td>{label}</td><td class='num'>{100 * score:.1f}%</td>"
                f"<td class='num'>{ptok:.0f}</td><td class='num'>{otok:.0f}</td>"
                f"<td class='num'>{sec:.3f}</td></tr>"
            )
        parts.append(
            f"</tbody></table><p class='meta'>The tuned model needs "
            f"{pc.token_saving:.0%} fewer tokens per request; base with the short "
            f"prompt scores {100 * pc.base_short_score:.1f}%.</p>"
        )
    if result.base_model is not None:
        wins, regressions = wins_and_regressions(result)
        for title, ident, items in (
            ("Biggest wins", "wins", wins),
            ("Worst regressions", "regressions", regressions),
        ):
            parts.append(f"<h2>{title}</h2>")
            if not items:
                parts.append(f"<p id='{ident}' class='meta'>none</p>")
                continue
            parts.append(
                f"<table id='{ident}' class='samples'><thead><tr><th>prompt</th>"
                "<th>reference</th><th>base</th><th>tuned</th></tr></thead><tbody>"
            )
            for ex in items:
                parts.append(
                    f"<tr><td>{_esc(ex.prompt[-1]['content'] if ex.prompt else '')}"
                    f"<br><span class='meta'>{_esc(ex.source)}</span></td>"
                    f"<td>{_esc(ex.reference)}</td><td>{_esc(ex.base_output)}</td>"
                    f"<td>{_esc(ex.tuned_output)}</td></tr>"
                )
            parts.append("</tbody></table>")
    if result.timings:
        parts.append(
            "<h2>Timings</h2><p class='meta'>"
            + " · ".join(f"{_esc(k)}: {v:.1f}" for k, v in result.timings.items())
            + "</p>"
        )
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)
