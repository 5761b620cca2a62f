"""`tunesmith demo`: the bundled data is what the generator writes, the pipeline runs end to end
(on the tiny model here, on the real default model in the slow test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"


def test_bundled_demo_data_is_reproducible_and_sound(tmp_path) -> None:
    subprocess.run(
        [sys.executable, str(DEMO / "make_data.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), name
    train = [json.loads(x) for x in (DEMO / "train.jsonl").read_text().splitlines()]
    held = [json.loads(x) for x in (DEMO / "heldout.jsonl").read_text().splitlines()]
    assert len(train) >= 300 and len(held) >= 100
    train_msgs = {r["messages"][1]["content"] for r in train}
    assert not train_msgs & {r["messages"][1]["content"] for r in held}
    keys = {"category", "priority", "sentiment", "order_id"}
    for row in train + held:
        label = json.loads(row["messages"][-1]["content"])
        assert set(label) == keys
        if label["order_id"] is not None:  # the id is copied verbatim from the message
            assert label["order_id"] in row["messages"][1]["content"]
    cats = {json.loads(r["messages"][-1]["content"])["category"] for r in held}
    assert len(cats) == 6


@pytest.mark.filterwarnings("ignore")
def test_demo_pipeline_on_the_tiny_model(tiny_model_dir, tmp_path) -> None:
    from tunesmith.demo import run_demo

    seen: list = []
    result = run_demo(
        tmp_path / "demo", model=tiny_model_dir, max_steps=2, limit=6, on_event=seen.append
    )
    lines = [e.message for e in seen if e.kind == "message"]
    assert (result.run_dir / "final").is_dir()
    data = json.loads((result.eval_dir / "results.json").read_text())
    assert data["main_metric"] == "json_fields" and data["n"] == 6
    assert data["prompt_cost"]["n"] == 6
    assert data["forgetting"]["n"] > 40
    assert "demo_total_seconds" in data["timings"]
    assert any(line.startswith("1/3 validating") for line in lines)


def test_demo_never_overwrites_an_existing_run(tmp_path) -> None:
    from tunesmith.demo import fresh_output_dir

    out = tmp_path / "demo"
    assert fresh_output_dir(out) == out
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    first = fresh_output_dir(out)
    assert first != out and first.parent == tmp_path and first.name.startswith("demo-")
    first.mkdir()
    assert fresh_output_dir(out) not in (out, first)


@pytest.mark.slow
def test_demo_on_the_default_model_beats_the_base_model(tmp_path) -> None:
    """The acceptance run: ~7 minutes on a 2-core CPU."""
    from tunesmith.demo import run_demo

    result = run_demo(tmp_path / "demo")
    main = result.comparison.main
    assert result.comparison.n >= 100
    assert main.name == "json_fields"
    assert main.better is True and main.diff > 0.3
    assert result.seconds["total"] < 600
