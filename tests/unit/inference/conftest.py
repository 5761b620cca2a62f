"""Fixtures of the serving tests: small peft adapters of the tiny model, made once per run.

Adapters are saved by peft itself (as training does), with random A and B so that each one
answers differently from the base model and from its siblings."""

from __future__ import annotations

from pathlib import Path

import pytest

PROMPTS = [
    "hi",
    "what is the capital of france and germany, please?",
    "refund",
    "classify: my delivery is late and the invoice is wrong",
]


def save_adapter(base: Path, out: Path, *, seed: int, dora: bool = False, r: int = 4) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
        init_lora_weights=False,  # random B too: the adapter changes the answers
        use_dora=dora,
        task_type="CAUSAL_LM",
    )
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def adapter_dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three plain LoRA adapters of the tiny model."""
    root = tmp_path_factory.mktemp("adapters")
    return [save_adapter(tiny_model_dir, root / f"lora{i}", seed=i) for i in range(3)]


@pytest.fixture(scope="session")
def dora_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_adapter(tiny_model_dir, tmp_path_factory.mktemp("dora") / "dora", seed=9, dora=True)


@pytest.fixture
def prompts(tiny_tokenizer) -> list[list[int]]:
    from tunesmith.inference import prompt_ids

    return [prompt_ids(tiny_tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]
