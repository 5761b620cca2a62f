"""A training run with held-out data ends with the base-vs-tuned comparison in RUN_DIR/eval/,
and `tunesmith compare RUN_DIR` reproduces it from the run's own defaults."""

from __future__ import annotations

import json

import pytest
from train_helpers import base_spec, write_chat

from tunesmith.runs import RunDir


@pytest.mark.filterwarnings("ignore")
def test_training_run_calls_compare_run_at_the_end(tiny_model_dir, tmp_path) -> None:
    from tunesmith import api

    train = write_chat(tmp_path / "train.jsonl", 24, seed=1)
    val = write_chat(tmp_path / "val.jsonl", 10, seed=2)
    spec = base_spec(
        tiny_model_dir,
        train,
        tmp_path / "run",
        max_steps=4,
        adapter="lora",
        eval={"compare_base": True},
    )
    spec["data"]["validation"] = str(val)
    seen = []
    result = api.train(spec, on_event=seen.append)
    results = result.run_dir / "eval" / "results.json"
    # issue 11 item 14: the verdict, the forgetting line and the report's path are events
    (verdict,) = [e for e in seen if e.kind == "result" and e.phase == "compare"]
    assert verdict.message == result.comparison.verdict() == verdict.data["verdict"]
    texts = [e.message for e in seen if e.phase == "compare" and e.kind == "message"]
    assert result.comparison.forgetting.message in texts
    assert f"report: {result.run_dir / 'eval' / 'report.html'} (also report.md, results.json)" in (
        texts
    )
    assert results.is_file(), "training did not run the comparison"
    data = json.loads(results.read_text())
    assert data["n"] == 10
    assert data["main_metric"] == "json_match"
    assert data["forgetting"] is not None
    assert set(data["metrics"]) >= {"json_match", "json_valid", "heldout_loss", "perplexity"}
    # The adapter was trained on this task: the reference answers became more likely.
    assert data["metrics"]["heldout_loss"]["tuned"] < data["metrics"]["heldout_loss"]["base"]
    # One rule for which tokens carry loss: the report's held-out loss of the final model is
    # training's last validation loss on the same data (same tokens, same weights).
    last_val = [r for r in RunDir(result.run_dir).read_metrics() if "val_loss" in r][-1]
    assert last_val["step"] == 4  # validated at the end, with the weights that became final
    assert data["metrics"]["heldout_loss"]["tuned"] == pytest.approx(last_val["val_loss"], rel=1e-3)
    html = (result.run_dir / "eval" / "report.html").read_text()
    assert 'id="plot-loss"' in html

    # The same comparison from the run directory alone, with a different main metric.
    again = api.compare(result.run_dir, main_metric="json_valid", reference=False)
    assert again.main_metric == "json_valid" and again.n == 10
