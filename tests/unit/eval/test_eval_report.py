"""The report writer: results.json shape, tables, plots, samples, escaping."""

from __future__ import annotations

import base64
import json
import re

from tunesmith.eval.report import (
    read_training_metrics,
    render_markdown,
    wins_and_regressions,
    write_reports,
)


def test_results_json_has_the_documented_shape(comparison, tmp_path) -> None:
    paths = write_reports(comparison, tmp_path / "eval")
    data = json.loads(paths["json"].read_text())
    assert data["main_metric"] == "json_match"
    main = data["metrics"]["json_match"]
    assert main["base"] == 3 / 30 and main["tuned"] == 28 / 30
    assert main["significant"] is True
    lo, hi = main["ci"]
    assert lo <= main["tuned"] - main["base"] <= hi and lo > 0
    assert data["metrics"]["length"]["higher_is_better"] is None
    assert data["n"] == 30 and len(data["samples"]) == 30
    assert data["forgetting"]["warning"] is False  # +5 % < 10 %
    assert data["improved"] is True


def test_wins_and_regressions_are_ordered_and_correct(comparison) -> None:
    wins, regressions = wins_and_regressions(comparison, k=5)
    assert [e.index for e in wins] == [3, 4, 5, 6, 7]  # all +1, ties in file order
    assert [e.index for e in regressions] == [2]  # the one example the tuned model broke


def test_html_is_self_contained_with_plots_table_samples_and_escaping(comparison, tmp_path):
    html = write_reports(comparison, tmp_path / "eval")["html"].read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert "<b>3</b>" not in html
    images = re.findall(r'<img id="([\w-]+)" [^>]*src="data:image/png;base64,([^"]+)"', html)
    ids = {i for i, _ in images}
    assert {"plot-bars", "plot-diffs", "plot-loss"} <= ids
    for _, b64 in images:
        assert base64.b64decode(b64).startswith(b"\x89PNG\r\n\x1a\n")
    assert "http://" not in html and "https://" not in html  # nothing fetched from outside
    assert "id='metrics-table'" in html and "id='wins'" in html and "id='regressions'" in html
    assert "significantly better" in html


def test_markdown_table_and_verdict(comparison) -> None:
    md = render_markdown(comparison)
    assert "| json_match (main) | 10.0% | 93.3% | +83.3 pts |" in md
    assert "significantly better" in md
    assert "## Worst regressions" in md and "no forgetting detected" in md


def test_training_metrics_reader_skips_bad_lines(comparison) -> None:
    rows = read_training_metrics(comparison.run_dir)
    assert len(rows) == 22
    assert read_training_metrics(None) == []


def test_the_verdict_says_where_and_why_training_stopped(comparison) -> None:
    """A run that stopped before its planned steps (early stopping, a time budget): the
    verdict a person reads first says so, and results.json keeps it."""
    import dataclasses

    assert "Training" not in comparison.verdict()
    stopped = dataclasses.replace(
        comparison,
        training={
            "status": "early_stopped",
            "steps": 36,
            "planned_steps": 80,
            "best_step": 27,
            "stop_reason": "validation loss stopped improving: not better by more than 1% in 3 "
            "evaluations (best 0.4120 at step 27)",
        },
    )
    text = stopped.verdict()
    assert text.startswith("The tuned model is significantly better")
    assert "Training stopped early at step 36 of 80: validation loss stopped improving" in text
    assert "the tuned model is the best step's (27)" in text
    assert stopped.to_dict()["training"]["best_step"] == 27
    budget = dataclasses.replace(
        comparison,
        training={"status": "completed", "steps": 12, "planned_steps": 30, "best_step": None,
                  "stop_reason": "3 epochs (30 steps) would take 14 min; 1.2 epochs (12 steps) "
                  "fit in 5.0 min"},
    )  # fmt: skip
    assert "Training ended at step 12 of 30: 3 epochs (30 steps) would take" in budget.verdict()
