"""Builders for export tests: peft adapters with non-zero B weights on the tiny model (so the
merge really changes the model) and fake training run directories around them."""

from __future__ import annotations

import json
from pathlib import Path

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(base_dir: Path, out_dir: Path, *, dora: bool = False, seed: int = 1) -> Path:
    """Save a LoRA (or DoRA) adapter for `base_dir` whose B matrices are random, not zero."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=TARGETS, use_dora=dora, lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )  # fmt: skip
    model = get_peft_model(base, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
            elif "lora_magnitude" in name:
                param.mul_(1.0 + 0.2 * torch.rand(param.shape, generator=gen))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(out_dir))
    return out_dir


def make_run(base_dir: Path, run_dir: Path, *, dora: bool = False, seed: int = 1) -> Path:
    """A training-run layout: final/ = adapter, manifest.json naming the base."""
    make_adapter(base_dir, run_dir / "final", dora=dora, seed=seed)
    manifest = {
        "base_model": str(base_dir),
        "base_model_path": str(base_dir),
        "adapter": "dora" if dora else "lora",
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run_dir


def make_qlora_run(base_dir: Path, run_dir: Path, *, seed: int = 4) -> Path:
    """A QLoRA run: the adapter is built on the NF4-quantised base, as training does."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.models.load import quantization_config

    base = AutoModelForCausalLM.from_pretrained(
        str(base_dir), quantization_config=quantization_config("qlora"), dtype=torch.float32
    )
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    model.save_pretrained(str(run_dir / "final"), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(run_dir / "final"))
    manifest = {"base_model": str(base_dir), "base_model_path": str(base_dir), "adapter": "qlora"}
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run_dir
