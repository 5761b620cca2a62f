"""Merging adapters at float32: the merged model computes what the adapter model computes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tunesmith.export.common import ExportError
from tunesmith.export.merge import load_merged
from tunesmith.export.source import resolve_source

# Merged vs. unmerged adapter logits, float32: only summation order differs.
MERGE_ATOL = 1e-5
# QLoRA merged into the de-quantised base vs. the adapter on the 4-bit base (whose CPU kernel
# rounds differently from a float32 matmul of the de-quantised weights).
QLORA_ATOL = 2e-2
IDS = [[1, 40, 41, 42, 2, 1, 300, 301, 302, 303, 2, 1, 77]]


def _logits(model):
    import torch

    with torch.no_grad():
        return model(torch.tensor(IDS)).logits


def _adapter_and_base_logits(run: Path, base_dir: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()
    base_logits = _logits(base)
    adapter = PeftModel.from_pretrained(base, str(run / "final")).eval()
    return _logits(adapter), base_logits


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("run_fixture", ["lora_run", "dora_run"])
def test_merged_logits_equal_adapter_logits(
    request: pytest.FixtureRequest, run_fixture: str, tiny_model_dir: Path
) -> None:
    run = request.getfixturevalue(run_fixture)
    before = _digest(tiny_model_dir / "model.safetensors")
    merged = load_merged(resolve_source(run))
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    assert type(merged.model).__name__ == "LlamaForCausalLM"
    adapter_logits, base_logits = _adapter_and_base_logits(run, tiny_model_dir)
    merged_logits = _logits(merged.model)
    diff = (merged_logits - adapter_logits).abs().max().item()
    assert diff <= MERGE_ATOL, diff
    # The adapter really changes the model, so equality above is not trivially true.
    assert (base_logits - adapter_logits).abs().max().item() > 1000 * MERGE_ATOL
    assert _digest(tiny_model_dir / "model.safetensors") == before  # base left untouched


def test_quantised_base_weights_are_refused(lora_run: Path, tiny_model_dir: Path, tmp_path):
    base = tmp_path / "base4bit"
    shutil.copytree(tiny_model_dir, base)
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (base / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="bitsandbytes"):
        load_merged(resolve_source(lora_run, base=base))


def test_full_model_is_loaded_unchanged(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    merged = load_merged(resolve_source(tiny_model_dir))
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    assert torch.equal(_logits(merged.model), _logits(plain))
    assert merged.model.dtype == torch.float32


def test_qlora_is_merged_into_the_dequantised_4bit_base(tiny_model_dir: Path, tmp_path: Path):
    """The QLoRA adapter learned on the NF4 base; merging it into the de-quantised NF4 weights
    reproduces the adapter model, merging into the original weights does not."""
    pytest.importorskip("bitsandbytes")
    import torch
    from export_helpers import make_qlora_run
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunesmith.models.load import quantization_config

    run = make_qlora_run(tiny_model_dir, tmp_path / "qlora")
    merged = load_merged(resolve_source(run))
    assert any("de-quantised 14 4-bit base weights" in n for n in merged.notes), merged.notes
    assert merged.model.dtype == torch.float32
    assert not any("4bit" in type(m).__name__ for m in merged.model.modules())

    quantised = AutoModelForCausalLM.from_pretrained(
        str(tiny_model_dir), quantization_config=quantization_config("qlora"), dtype=torch.float32
    )
    trained = _logits(PeftModel.from_pretrained(quantised, str(run / "final")).eval())
    into_dequantised = (_logits(merged.model) - trained).abs().max().item()
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "adapter": "lora"}))
    into_original = (_logits(load_merged(resolve_source(run)).model) - trained).abs().max()
    # 4-bit matmul kernels round activations differently from float32: a small budget.
    assert into_dequantised <= QLORA_ATOL, into_dequantised
    assert into_original.item() > 5 * into_dequantised


def test_qlora_without_bitsandbytes_warns(dora_run: Path, tmp_path: Path, monkeypatch) -> None:
    from tunesmith.export import merge

    run = tmp_path / "q"
    shutil.copytree(dora_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "adapter": "qlora"}))

    def no_bnb(_path):
        raise ImportError("No module named 'bitsandbytes'")

    monkeypatch.setattr(merge, "load_dequantised_4bit", no_bnb)
    merged = load_merged(resolve_source(run))
    assert len(merged.warnings) == 1 and "bitsandbytes is not installed" in merged.warnings[0]
    adapter_logits, _ = _adapter_and_base_logits(run, Path(manifest["base_model_path"]))
    assert (_logits(merged.model) - adapter_logits).abs().max().item() <= MERGE_ATOL
