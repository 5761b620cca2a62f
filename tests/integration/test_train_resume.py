"""Crash safety: a run killed with SIGKILL (after a checkpoint, or in the middle of writing
one) and resumed logs exactly the losses of an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from train_helpers import (
    base_spec,
    cli_env,
    losses,
    run_cli,
    tunesmith_cmd,
    write_chat,
    write_config,
)

STEPS = 10


def _config(tmp: Path, model_dir: Path, name: str) -> tuple[Path, Path]:
    data = tmp / "train.jsonl"
    if not data.exists():
        write_chat(data, 40)
    out = tmp / name
    # dropout on: resume must also restore the RNG to replay the same dropout masks
    spec = base_spec(
        model_dir,
        data,
        out,
        max_steps=STEPS,
        save_every_steps=2,
        keep_checkpoints=2,
        lora={"dropout": 0.1},
    )
    return write_config(tmp / f"{name}.yaml", spec), out


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list:
    tmp = tmp_path_factory.mktemp("resume-ref")
    config, out = _config(tmp, tiny_model_dir, "ref")
    proc = run_cli("train", str(config), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    ref = losses(out)
    assert [s for s, _ in ref] == list(range(1, STEPS + 1))
    return ref


def _kill_when(proc: subprocess.Popen, ready: callable, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before the kill: {proc.stderr.read()}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("checkpoint never appeared")


def test_kill9_after_checkpoint_then_resume_matches(tiny_model_dir, tmp_path, reference):
    config, out = _config(tmp_path, tiny_model_dir, "killed")
    proc = subprocess.Popen(
        tunesmith_cmd("train", str(config), "--no-progress"),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _kill_when(proc, lambda: (out / "checkpoints" / "step-4" / "COMPLETE").exists())
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "final").exists()

    resumed = run_cli("train", "--resume", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    got = losses(out)
    assert [s for s, _ in got] == [s for s, _ in reference]
    for (step, a), (_, b) in zip(got, reference, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), f"step {step}: {a} vs {b}"
    assert (out / "final" / "adapter_model.safetensors").is_file()


def test_kill9_in_the_middle_of_a_save_then_resume_matches(tiny_model_dir, tmp_path, reference):
    config, out = _config(tmp_path, tiny_model_dir, "killed-in-save")
    # The hook SIGKILLs the process after the weights of checkpoint 6 are written but before
    # its COMPLETE marker: a half-written checkpoint must never be resumed from.
    proc = run_cli(
        "train", str(config), "--no-progress", env=cli_env(TUNESMITH_DEBUG_KILL_IN_SAVE="6")
    )
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p.name for p in (out / "checkpoints").iterdir()]
    assert any(name.startswith(".tmp-step-6") for name in leftovers), leftovers
    assert "step-6" not in leftovers

    resumed = run_cli("train", "--resume", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "removed incomplete checkpoint .tmp-step-6" in resumed.stderr
    assert "(step 4)" in resumed.stderr
    got = losses(out)
    assert [s for s, _ in got] == [s for s, _ in reference]
    for (step, a), (_, b) in zip(got, reference, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), f"step {step}: {a} vs {b}"
