"""Loading: device/dtype choice, stop tokens, adapters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith.errors import ModelError
from tunesmith.models import load_model
from tunesmith.models.load import pick_device, pick_dtype


def test_cpu_defaults_to_float32_never_bf16() -> None:
    assert pick_dtype(torch.device("cpu")) == torch.float32
    assert pick_dtype(torch.device("cpu"), "bf16") == torch.bfloat16  # only when asked


def test_bad_dtype_and_device_are_user_errors() -> None:
    with pytest.raises(ModelError, match="unknown dtype"):
        pick_dtype(torch.device("cpu"), "float7")
    with pytest.raises(ModelError, match="unknown device"):
        pick_device("toaster")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_user_error() -> None:
    with pytest.raises(ModelError, match="no CUDA GPU"):
        pick_device("cuda")


def test_load_tiny_model(tiny_model_dir: Path) -> None:
    lm = load_model(tiny_model_dir)
    assert lm.device.type in ("cpu", "cuda")
    assert next(lm.model.parameters()).dtype == torch.float32 or lm.device.type == "cuda"
    im_end = lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in lm.stop_token_ids
    assert not lm.model.training


def test_adapter_dir_attaches_lora(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft_model = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    ids = torch.tensor([[1, 5, 9, 12, 40]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))(input_ids=ids).logits

    lm = load_model(adapter)
    with torch.no_grad():
        got = lm.model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapter really changes the output
