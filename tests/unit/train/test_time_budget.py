"""`time_budget`: the run fits its steps to the time from what its steps measure, ends within
the budget plus a step and the final save, follows the shorter schedule and says what it cut."""

from __future__ import annotations

import json
import time

from train_helpers import base_spec, write_chat

from tunesmith import api
from tunesmith.train.objectives import sft as sft_mod

STEP_S = 0.2  # each micro-batch sleeps this long: steps cost a known time on any machine


def test_a_run_with_a_time_budget_stops_in_time_and_says_what_it_cut(
    tiny_model_dir, tmp_path, monkeypatch
):
    real = sft_mod.SFTLoss.forward

    def slow(self, *args, **kwargs):
        time.sleep(STEP_S)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(sft_mod.SFTLoss, "forward", slow)
    train = write_chat(tmp_path / "train.jsonl", 40)
    spec = base_spec(
        tiny_model_dir, train, tmp_path / "run", epochs=20, grad_accum=1, time_budget="8s",
        save_every_steps=1000, scheduler="linear",
    )  # fmt: skip
    start = time.perf_counter()
    result = api.train(spec)
    wall = time.perf_counter() - start
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    planned = result.spec.total_steps
    steps = manifest["steps"]
    assert result.status == "completed" and manifest["planned_steps"] == planned
    assert planned * STEP_S > 40  # 20 epochs would take far longer than the budget
    assert 5 <= steps < planned // 3
    # within the budget plus one step and the final save (writing final/: well under 1 s)
    assert wall < 8 + STEP_S + 1.5
    cut = manifest["time_budget"]
    assert cut["budget_s"] == 8 and cut["planned_steps"] == planned
    assert "would take" in cut["message"] and "fit in 8 s" in cut["message"]
    assert f"{steps} of {planned} planned steps" in manifest["stop_reason"]
    # the learning-rate schedule followed the shorter run: linear decay reaches ~0 at its end
    lrs = [m["lr"] for m in result.metrics]
    assert lrs[-1] < 0.3 * lrs[0]
    said = [e.message for e in api.read_events(result.run_dir) if e.message]
    assert any(m.startswith("time budget: ") and "would take" in m for m in said)


def test_a_budget_that_fits_cuts_nothing(tiny_model_dir, tmp_path):
    train = write_chat(tmp_path / "train.jsonl", 16)
    spec = base_spec(tiny_model_dir, train, tmp_path / "run", max_steps=4, time_budget="10m")
    result = api.train(spec)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["steps"] == 4 and "time_budget" not in manifest
    assert manifest.get("stop_reason") is None
