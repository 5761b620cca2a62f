"""HF export: merged safetensors that plain transformers loads, with template and stop tokens."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "export"))
from export_helpers import make_run

# Plain transformers reload of the float32 export vs. the merged model: identical weights.
F32_ATOL = 1e-6
# bf16 export: weights rounded to 8 mantissa bits.
BF16_ATOL = 5e-2


@pytest.fixture(scope="module")
def dora_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tiny_model_dir, tmp_path_factory.mktemp("hf-run"), dora=True, seed=3)


def test_hf_export_loads_with_plain_transformers(dora_run: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.export import export_model
    from tunesmith.export.source import resolve_source
    from tunesmith.export.verify import logits_for, probe_ids

    result = export_model(dora_run, fmt="hf", out=tmp_path / "hf")
    names = {p.name for p in result.files}
    assert {"model.safetensors", "config.json", "generation_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    assert "adapter_config.json" not in names

    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    src = resolve_source(dora_run)
    base = AutoModelForCausalLM.from_pretrained(str(src.base_path), dtype=torch.float32)
    adapter = PeftModel.from_pretrained(base, str(src.weights_dir)).eval()
    ids = probe_ids(tok)
    diff = max(
        (a - b).abs().max().item()
        for a, b in zip(logits_for(model, ids), logits_for(adapter, ids), strict=True)
    )
    assert diff <= F32_ATOL * 10, diff  # merge (1e-5 budget) + save/load (exact)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    eos = model.generation_config.eos_token_id
    assert im_end in (eos if isinstance(eos, list) else [eos])
    assert model.generation_config.pad_token_id == tok.pad_token_id
    original = AutoTokenizer.from_pretrained(str(src.tokenizer_dir))
    assert tok.chat_template == original.chat_template
    assert result.roundtrip is not None and result.roundtrip.max_abs_logit_diff <= F32_ATOL


def test_bf16_hf_export(dora_run: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.export import export_model

    result = export_model(dora_run, fmt="hf", quantize="bf16", out=tmp_path / "bf16")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "bf16"), dtype="auto")
    assert model.dtype == torch.bfloat16
    assert result.roundtrip is not None
    assert 0 < result.roundtrip.max_abs_logit_diff <= BF16_ATOL
