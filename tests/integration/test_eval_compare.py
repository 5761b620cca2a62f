"""Base vs tuned end to end on tiny models: generation, metrics, loss, forgetting, reports,
run directories, and the CLI commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tunesmith.cli import main as cli_main


def _rows(n: int) -> list[dict]:
    cats = ["billing", "refund", "delivery"]
    return [
        {
            "messages": [
                {"role": "system", "content": "Reply with JSON only."},
                {"role": "user", "content": f"My order {i} is late, please help"},
                {
                    "role": "assistant",
                    "content": json.dumps({"category": cats[i % 3], "order_id": str(i)}),
                },
            ]
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "heldout.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _rows(12)) + "\n")
    return path


@pytest.fixture(scope="module")
def damaged_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A copy of the tiny model with noise on every weight: a 'tuned' model that forgot."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("damaged")
    for f in tiny_model_dir.iterdir():
        if f.is_file():
            shutil.copy(f, out / f.name)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(out, safe_serialization=True)
    return out


def test_compare_models_scores_both_and_writes_consistent_reports(
    tiny_model_dir, damaged_model_dir, heldout, tmp_path
) -> None:
    from tunesmith.eval.compare import compare_models

    seen = []
    result = compare_models(
        damaged_model_dir,
        tiny_model_dir,
        heldout,
        max_new_tokens=8,
        batch_size=4,
        output_dir=tmp_path / "eval",
        on_event=seen.append,
    )
    assert result.n == 12
    assert result.main_metric == "json_match"  # chosen from the JSON references
    progress = [e for e in seen if e.kind == "progress"]
    assert {"base model: answering", "tuned model: answering"} <= {e.message for e in progress}
    phases = {e.phase for e in progress}
    assert {"generate:base", "generate:tuned", "loss:base", "loss:tuned"} <= phases
    assert {"forgetting:base", "forgetting:tuned"} <= phases
    for phase in phases:  # every phase runs to its end
        last = [e for e in progress if e.phase == phase][-1]
        assert last.total and last.done == last.total, phase
    data = json.loads((tmp_path / "eval" / "results.json").read_text())
    for name, m in data["metrics"].items():
        assert set(m) >= {"base", "tuned", "ci", "significant"}, name
        if name not in ("heldout_loss", "perplexity"):
            base_mean = sum(s["base_scores"][name] for s in data["samples"]) / 12
            assert m["base"] == pytest.approx(base_mean)
        lo, hi = m["ci"]
        assert lo <= m["diff"] + 1e-9 and m["diff"] <= hi + 1e-9
        assert m["significant"] == (lo > 0 or hi < 0)
    # Random tiny models never produce the JSON answers.
    assert data["metrics"]["json_match"]["base"] == 0.0
    assert data["metrics"]["json_match"]["significant"] is False
    # Noise on every weight makes general text far less likely: the forgetting check fires.
    f = data["forgetting"]
    assert f["tuned_perplexity"] > f["base_perplexity"] * 1.1 and f["warning"] is True
    assert data["metrics"]["perplexity"]["tuned"] > data["metrics"]["perplexity"]["base"]
    assert (tmp_path / "eval" / "report.html").read_text().count("data:image/png;base64,") >= 2


def test_same_model_twice_shows_no_difference_and_no_forgetting(tiny_model_dir, heldout):
    from tunesmith.eval.compare import compare_models
    from tunesmith.models import load_model

    lm = load_model(tiny_model_dir)
    result = compare_models(lm, lm, heldout, metrics=["rouge_l", "length"], max_new_tokens=6)
    for m in result.metrics.values():
        assert m.diff == pytest.approx(0.0, abs=1e-9) and not m.significant
    assert result.forgetting.relative_change == pytest.approx(0.0, abs=1e-9)
    assert not result.forgetting.warning
    assert result.main.better is None


def test_prompt_cost_view_counts_tokens(tiny_model_dir, heldout) -> None:
    from tunesmith.eval.compare import compare_models

    long_prompt = "Follow these rules carefully. " * 20
    result = compare_models(
        tiny_model_dir,
        tiny_model_dir,
        heldout,
        max_new_tokens=4,
        reference=False,
        loss=False,
        long_prompt=long_prompt,
        prompt_cost_limit=5,
    )
    pc = result.prompt_cost
    assert pc is not None and pc.n == 5
    assert pc.base_long_prompt_tokens > pc.tuned_short_prompt_tokens + 80
    assert 0 < pc.token_saving < 1
    assert result.forgetting is None


def _fake_run(tmp_path: Path, model_dir: Path, heldout: Path, base: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(model_dir, run / "final")
    (run / "manifest.json").write_text(
        json.dumps({"base_model": str(base), "base_model_path": str(base)})
    )
    (run / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "model": str(base),
                "data": {"train": "nope.jsonl", "validation": str(heldout)},
                "eval": {"compare_base": True},
            }
        )
    )
    (run / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "loss": 3.0 - 0.1 * s}) for s in range(1, 11))
    )
    return run


def test_compare_run_uses_the_runs_base_model_and_validation_data(
    tiny_model_dir, damaged_model_dir, heldout, tmp_path
) -> None:
    from tunesmith.eval.compare import compare_run

    run = _fake_run(tmp_path, damaged_model_dir, heldout, tiny_model_dir)
    result = compare_run(run, max_new_tokens=4, reference=False)
    assert result.base_model is not None and result.n == 12
    assert (run / "eval" / "results.json").is_file()
    html = (run / "eval" / "report.html").read_text()
    assert 'id="plot-loss"' in html  # loss curve from the run's metrics.jsonl


def test_cli_eval_compare_and_user_errors(
    tiny_model_dir, damaged_model_dir, heldout, tmp_path, capsys
) -> None:
    run = _fake_run(tmp_path, damaged_model_dir, heldout, tiny_model_dir)
    out = tmp_path / "evalout"
    with pytest.raises(SystemExit) as exc:
        cli_main(
            [
                "eval",
                str(damaged_model_dir),
                "--data",
                str(heldout),
                "--baseline",
                str(tiny_model_dir),
                "--metrics",
                "exact_match,length",
                "--max-new-tokens",
                "4",
                "--no-forgetting",
                "--no-progress",
                "--output-dir",
                str(out),
            ]
        )
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    assert "exact_match" in printed and "(main)" in printed and "CI" in printed
    assert "No significant difference" in printed or "significantly" in printed
    assert json.loads((out / "results.json").read_text())["main_metric"] == "exact_match"

    with pytest.raises(SystemExit) as exc:
        cli_main(
            [
                "compare",
                str(run),
                "--max-new-tokens",
                "4",
                "--no-forgetting",
                "--no-progress",
                "--metrics",
                "rouge_l",
            ]
        )
    assert exc.value.code == 0
    assert json.loads((run / "eval" / "results.json").read_text())["main_metric"] == "rouge_l"

    with pytest.raises(SystemExit) as exc:
        cli_main(
            [
                "eval",
                str(tiny_model_dir),
                "--data",
                str(heldout),
                "--metrics",
                "bogus",
                "--no-progress",
            ]
        )
    assert exc.value.code == 2
    assert "unknown metric" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["compare", str(tmp_path), "--no-progress"])
    assert exc.value.code == 2


def test_single_model_eval_reports_values_with_intervals(tiny_model_dir, heldout, tmp_path):
    from tunesmith import api

    result = api.evaluate(
        tiny_model_dir,
        heldout,
        metrics=["json_valid", "length"],
        max_new_tokens=4,
        output_dir=tmp_path / "single",
    )
    data = json.loads((tmp_path / "single" / "results.json").read_text())
    assert data["base_model"] is None and data["forgetting"] is None
    length = data["metrics"]["length"]
    assert "value" in length and length["base"] is None and length["significant"] is None
    assert length["ci"][0] <= length["value"] <= length["ci"][1]
    assert result.main.verdict == "single model"
    assert "<table id='metrics-table'>" in (tmp_path / "single" / "report.html").read_text()
