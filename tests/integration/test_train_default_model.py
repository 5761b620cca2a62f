"""Acceptance on the real default model (slow): the documented one-liner trains on the bundled
sample, the loss falls, and the adapter loads with plain peft and generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import cli_env, run_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_one_liner_trains_default_model_and_adapter_generates(tmp_path: Path):
    out = tmp_path / "run"
    proc = run_cli(
        "train",
        "--model",
        "smollm2-135m-instruct",
        "--data",
        str(ROOT / "examples" / "chat-sample.jsonl"),
        "--adapter",
        "lora",
        "--max-steps",
        "30",
        "--output-dir",
        str(out),
        "--no-progress",
        env=cli_env(OMP_NUM_THREADS=""),
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base_model"] == "smollm2-135m-instruct"
    base = AutoModelForCausalLM.from_pretrained(manifest["base_model_path"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(out / "final")).eval()
    tok = AutoTokenizer.from_pretrained(str(out / "final"))
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "My parcel never arrived, order #7781."}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )["input_ids"]
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=40, do_sample=False)
        with model.disable_adapter():
            base_gen = model.generate(ids, max_new_tokens=40, do_sample=False)
    text = tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)
    assert text.strip()
    # 30 steps move the answers toward the support data (the strict JSON format needs more)
    assert gen[0].tolist() != base_gen[0].tolist()
