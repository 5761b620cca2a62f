"""The loop refuses to hide trouble and stops cleanly when asked: NaN/inf guard, early stopping
with restore of the best weights, cancel by file or signal (with a checkpoint to resume from)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from train_helpers import base_spec, write_chat

from tunesmith import api
from tunesmith.errors import TrainingError
from tunesmith.train.objectives import sft as sft_mod


def _train(spec: dict):
    return api.train(spec)


def test_injected_inf_loss_stops_with_the_step_number(
    tiny_model_dir, chat_file, tmp_path, monkeypatch
):
    real = sft_mod.SFTLoss.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:  # 2 micro-batches per step: the 5th is step 3's first
            out["loss"] = out["loss"] * float("inf")
        return out

    monkeypatch.setattr(sft_mod.SFTLoss, "forward", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"loss is (inf|nan) at step 3\b"):
        _train(base_spec(tiny_model_dir, chat_file, run, max_steps=6))
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]  # nothing logged for the bad step
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"


def test_huge_learning_rate_trips_the_guard(tiny_model_dir, chat_file, tmp_path):
    spec = base_spec(
        tiny_model_dir,
        chat_file,
        tmp_path / "run",
        adapter="none",
        learning_rate=1e12,
        max_grad_norm=0,
        max_steps=8,
    )
    with pytest.raises(TrainingError, match=r"at step \d+") as exc:
        _train(spec)
    assert "lower learning_rate" in str(exc.value)


def _constant_answers(path: Path, n: int, answer: str, seed: int) -> Path:
    rows = [json.loads(line) for line in write_chat(path, n, seed=seed).read_text().splitlines()]
    for row in rows:
        row["messages"][-1]["content"] = answer
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_early_stopping_fires_and_restores_the_best_weights(tiny_model_dir, tmp_path):
    """Over-fitting by construction: training always answers "A", validation always "B". The
    validation loss first falls (the reply shape and end-of-turn are learned), then rises as
    the model grows sure the answer is "A". Full fine-tuning: the tiny random model learns
    this in a few steps (its LoRA barely moves)."""
    train = _constant_answers(tmp_path / "train.jsonl", 40, "A", seed=0)
    val = _constant_answers(tmp_path / "val.jsonl", 12, "B", seed=1)
    spec = base_spec(
        tiny_model_dir,
        train,
        tmp_path / "run",
        adapter="none",
        max_steps=40,
        learning_rate=5e-3,
        scheduler="constant",
        data={"validation": str(val)},
        eval={"every_steps": 2},
        save_every_steps=1000,
        early_stopping={"enabled": True, "patience": 2},
    )
    result = _train(spec)
    assert result.status == "early_stopped"
    evals = [m for m in result.metrics if "val_loss" in m]
    best = min(evals, key=lambda m: m["val_loss"])
    assert best["val_loss"] < evals[0]["val_loss"] - 0.5  # it did fall first
    assert result.metrics[-1]["step"] < 40
    assert evals[-1]["val_loss"] > best["val_loss"] and evals[-2]["val_loss"] > best["val_loss"]
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["best_step"] == best["step"] and manifest["status"] == "early_stopped"
    # final/ holds the best weights, not the last ones
    from safetensors.torch import load_file

    ckpt = load_file(
        str(result.run_dir / "checkpoints" / f"step-{best['step']}" / "trainable.safetensors")
    )
    final = load_file(str(result.final_dir / "model.safetensors"))
    assert final
    for key, value in final.items():
        match = [v for k, v in ckpt.items() if k == key or k.endswith("." + key)]
        assert len(match) == 1, key
        assert torch.equal(match[0], value), key


def _cancel_when(run: Path, step: int, action) -> threading.Thread:
    def watch() -> None:
        deadline = time.time() + 60
        metrics = run / "metrics.jsonl"
        while time.time() < deadline:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= step:
                action()
                return
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("how", ["file", "sigint"])
def test_cancel_saves_a_checkpoint_and_resume_finishes(how, tiny_model_dir, chat_file, tmp_path):
    run = tmp_path / "run"
    total = 300
    spec = base_spec(tiny_model_dir, chat_file, run, max_steps=total, save_every_steps=1000)
    before = signal.getsignal(signal.SIGINT)  # the default, or SIG_IGN in a background job
    if how == "file":
        _cancel_when(run, 3, lambda: (run / "CANCEL").touch())
    else:
        _cancel_when(run, 3, lambda: os.kill(os.getpid(), signal.SIGINT))
    result = _train(spec)
    assert result.status == "cancelled"
    stopped = result.metrics[-1]["step"]
    assert 3 <= stopped < total
    assert (run / "checkpoints" / f"step-{stopped}" / "COMPLETE").is_file()
    assert not (run / "final").exists()
    assert json.loads((run / "manifest.json").read_text())["status"] == "cancelled"
    # the handler was removed again: Ctrl-C outside training behaves as it did before
    assert signal.getsignal(signal.SIGINT) is before

    (run / "CANCEL").unlink(missing_ok=True)
    spec_path = run / "config.yaml"
    text = spec_path.read_text().replace(f"total_steps: {total}", f"total_steps: {stopped + 2}")
    spec_path.write_text(text.replace(f"max_steps: {total}", f"max_steps: {stopped + 2}"))
    resumed = api.resume(run)
    assert resumed.status == "completed"
    assert [m["step"] for m in resumed.metrics] == list(range(1, stopped + 3))
    assert (run / "final" / "adapter_model.safetensors").is_file()


def test_a_run_directory_in_use_is_refused(tiny_model_dir, chat_file, tmp_path):
    from tunesmith.errors import ConfigError
    from tunesmith.runs import RunDir

    run = tmp_path / "run"
    _train(base_spec(tiny_model_dir, chat_file, run, max_steps=2, save_every_steps=1))
    RunDir(run).update_manifest(status="running")  # as if it had been killed
    lock = RunDir(run).lock().acquire()  # ... or another process were still training in it
    try:
        with pytest.raises(ConfigError, match="in use by another process"):
            api.resume(run)
    finally:
        lock.release()
    assert api.resume(run).status == "completed"
    with pytest.raises(ConfigError, match="already finished"):
        api.resume(run)


# -- silent divergence: finite numbers, a ruined model ----------------------------------------


def _feed(guard, losses, norms=None, start=None):
    from types import SimpleNamespace

    state = SimpleNamespace(start_loss=start)
    norms = norms or [1.0] * len(losses)
    for step, (loss, norm) in enumerate(zip(losses, norms, strict=True), start=1):
        guard.check(state, step, loss, norm)
    return state


def test_the_guard_trips_on_divergence_collapse_and_dead_gradients():
    import math

    from tunesmith.train.guards import DivergenceGuard

    uniform = math.log(49152)
    with pytest.raises(TrainingError, match=r"diverged: the loss is 9 at step 7, far above"):
        _feed(DivergenceGuard(uniform), [2.0, 2.1, 9.0, 9.0, 9.0, 9.0, 9.0])
    with pytest.raises(TrainingError, match=r"collapsed: .*ln\(vocabulary size\)"):
        _feed(DivergenceGuard(uniform), [1.5] + [uniform] * 5)
    with pytest.raises(TrainingError, match=r"exactly zero for 3 steps \(step 4\)"):
        _feed(DivergenceGuard(uniform), [1.5] * 4, [1.0, 0.0, 0.0, 0.0])


def test_the_guard_lets_ordinary_runs_be():
    import math
    import random

    from tunesmith.train.guards import DivergenceGuard

    rng = random.Random(0)
    noisy = [max(0.05, 1.2 - 0.01 * i + rng.gauss(0, 0.4)) for i in range(300)]
    state = _feed(DivergenceGuard(math.log(49152)), noisy)
    assert state.start_loss == noisy[0]
    # spikes shorter than the patience, a lone zero gradient, a random model near uniform
    _feed(DivergenceGuard(10.0), [2.0, 9.0, 9.0, 9.0, 9.0, 2.0, 9.0], [1, 0, 1, 0, 1, 0, 1])
    _feed(DivergenceGuard(math.log(700)), [6.54, 6.55, 6.551, 6.55, 6.549, 6.55, 6.548])
    _feed(DivergenceGuard(None), [1.0] + [50.0] * 4)  # not a token loss: no uniform check
    # a resumed run measures from the start it saved, not from its first step after resume
    with pytest.raises(TrainingError, match="far above the 1 it started at"):
        _feed(DivergenceGuard(None), [5.0] * 5, start=1.0)


def test_a_learning_rate_that_ruins_the_model_fails_the_run(tiny_model_dir, chat_file, tmp_path):
    """What the issue saw: learning_rate=1e6 ended "completed" with grad norm exactly 0 and the
    loss stuck at ln(vocab). Now it stops as failed, with the step and what happened."""
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"exactly zero|collapsed|diverged") as exc:
        _train(base_spec(tiny_model_dir, chat_file, run, learning_rate=1e6, max_steps=30))
    assert "lower learning_rate" in str(exc.value)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "step" in manifest["error"]
    assert not (run / "final").exists()


def test_the_divergence_start_survives_a_checkpoint(tiny_model_dir, chat_file, tmp_path):
    run = tmp_path / "run"
    _train(base_spec(tiny_model_dir, chat_file, run, max_steps=2, save_every_steps=2))
    state = json.loads((run / "checkpoints" / "step-2" / "trainer_state.json").read_text())
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert state["start_loss"] == first
