"""`torchrun --nproc-per-node 2` (gloo on CPU) follows the same loss curve as one process at
the same global batch: 1 process x 4 accumulated rows == 2 processes x 2 rows each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import base_spec, cli_env, losses, run_cli, write_chat, write_config

STEPS = 6
# Both runs see the same rows per step and normalise by the same global token count; only the
# order of float additions differs (all-reduce vs one process), so losses agree to ~1e-6.
TOLERANCE = 1e-4


def run_one_and_two_processes(tmp_path: Path, one: dict, two: dict) -> None:
    """Train `one` in one process (plain CLI) and `two` under torchrun with 2 ranks."""
    proc = run_cli("train", str(write_config(tmp_path / "one.yaml", one)), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    tunesmith = Path(sys.executable).with_name("tunesmith")
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc-per-node",
            "2",
            "--no-python",
            str(tunesmith),
            "train",
            str(write_config(tmp_path / "two.yaml", two)),
            "--no-progress",
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_process_ddp_matches_one_process(tiny_model_dir: Path, tmp_path: Path):
    data = write_chat(tmp_path / "train.jsonl", 40)
    common = {"max_steps": STEPS, "save_every_steps": 3, "lora": {"dropout": 0.0}}
    one = base_spec(tiny_model_dir, data, tmp_path / "one", grad_accum=4, **common)
    two = base_spec(tiny_model_dir, data, tmp_path / "two", grad_accum=2, **common)

    run_one_and_two_processes(tmp_path, one, two)

    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["hardware"]["world_size"] == 2
    single, ddp = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [s for s, _ in single] == [s for s, _ in ddp] == list(range(1, STEPS + 1))
    for (step, a), (_, b) in zip(single, ddp, strict=True):
        assert a == pytest.approx(b, rel=TOLERANCE), f"step {step}: 1 proc {a} vs 2 procs {b}"
    assert single[-1][1] < single[0][1]  # and it actually trained
    assert (tmp_path / "two" / "final" / "adapter_model.safetensors").is_file()


def test_two_process_fsdp_full_fine_tuning_matches_one_process(tiny_model_dir: Path, tmp_path):
    data = write_chat(tmp_path / "train.jsonl", 40)
    common = {"max_steps": 4, "save_every_steps": 2, "adapter": "none", "learning_rate": 1e-3}
    one = base_spec(tiny_model_dir, data, tmp_path / "one", grad_accum=4, **common)
    two = base_spec(
        tiny_model_dir,
        data,
        tmp_path / "two",
        grad_accum=2,
        distributed={"strategy": "fsdp"},
        **common,
    )
    run_one_and_two_processes(tmp_path, one, two)
    single, fsdp = losses(tmp_path / "one"), losses(tmp_path / "two")
    for (step, a), (_, b) in zip(single, fsdp, strict=True):
        assert a == pytest.approx(b, rel=TOLERANCE), f"step {step}: 1 proc {a} vs FSDP {b}"

    # the gathered full weights are a plain transformers model, equal to the 1-process result
    import torch
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(str(tmp_path / "one" / "final")).state_dict()
    b = AutoModelForCausalLM.from_pretrained(str(tmp_path / "two" / "final")).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
