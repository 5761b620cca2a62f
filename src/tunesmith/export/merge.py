"""Merge a LoRA/DoRA/QLoRA adapter into its base model, at full precision.

Why float32: merging adds B·A (times the scale, and for DoRA a magnitude renormalisation) to every
targeted weight. Done in bf16/fp16 the sum is rounded once more, done into 4-bit weights it is
rounded to the 4-bit grid and the merged model visibly answers differently from the adapter it
came from (a complaint users of other tools share). So the base is always loaded in float32.

QLoRA adapters were trained against the 4-bit (NF4) base, not the full-precision one. We
therefore rebuild that base exactly as training did (same bitsandbytes config), de-quantise
each 4-bit weight to float32 and merge there: the merged float32 model then computes what the
adapter computed in training, and no weight is ever rounded to 4 bits after the merge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.export.common import ExportError
from tunesmith.export.source import ExportSource


@dataclass
class MergedModel:
    """A plain transformers model (no peft wrappers) in float32 on the CPU, plus its tokenizer."""

    model: Any
    tokenizer: Any
    source: ExportSource
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _check_full_precision(model_dir: Path) -> None:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read config.json: {exc}", where=str(model_dir)) from None
    quant = config.get("quantization_config")
    if quant:
        method = quant.get("quant_method", "quantized") if isinstance(quant, dict) else "quantized"
        raise ExportError(
            f"the model in {model_dir} is stored {method}; merging into quantised weights "
            "changes the model's answers",
            hint="export from the full-precision base (the directory the run was trained from)",
        )


def load_float32(model_dir: Path) -> Any:
    """Load an HF model directory in float32 on the CPU, safetensors only, no remote code."""
    import torch
    from transformers import AutoModelForCausalLM

    _check_full_precision(model_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=torch.float32, trust_remote_code=False, use_safetensors=True
        )
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExportError(f"cannot load the model in {model_dir}: {first}") from None
    return model.to("cpu").eval()


def load_dequantised_4bit(model_dir: Path) -> tuple[Any, int]:
    """The float32 base with every weight QLoRA quantised replaced by its de-quantised value.

    Returns (model, number of replaced weights). Raises ImportError without bitsandbytes.
    """
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.models.load import quantization_config

    model = load_float32(model_dir)
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    quantised = AutoModelForCausalLM.from_pretrained(
        str(model_dir), quantization_config=quantization_config("qlora"), dtype=torch.float32,
        device_map={"": device}, trust_remote_code=False, use_safetensors=True,
    )  # fmt: skip
    replaced = 0
    with torch.no_grad():
        for name, module in quantised.named_modules():
            if isinstance(module, bnb.nn.Linear4bit):
                weight = bnb.functional.dequantize_4bit(
                    module.weight.data, module.weight.quant_state
                )
                model.get_submodule(name).weight.copy_(weight.to("cpu", torch.float32))
                replaced += 1
    del quantised
    return model, replaced


def merge_adapter(base_model: Any, adapter_dir: Path) -> Any:
    """Apply the adapter in `adapter_dir` to `base_model` and fold it into the weights."""
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExportError(
            f"the adapter in {adapter_dir} does not fit its base model: {first}",
            hint="pass --base with the model the adapter was trained on",
        ) from None
    try:
        merged = peft_model.merge_and_unload(safe_merge=True)
    except ValueError as exc:  # safe_merge found NaN/inf in the merged weights
        raise ExportError(f"merging the adapter produced invalid weights: {exc}") from None
    return merged.eval()


def load_merged(source: ExportSource) -> MergedModel:
    """The model described by `source`, with any adapter merged in, ready to save or convert."""
    from tunesmith.models.load import load_tokenizer

    tokenizer = load_tokenizer(source.tokenizer_dir)
    notes: list[str] = []
    if source.kind == "full":
        model = load_float32(source.weights_dir)
    else:
        assert source.base_path is not None
        warnings: list[str] = []
        if source.adapter_type == "qlora":
            try:
                model, replaced = load_dequantised_4bit(source.base_path)
                notes.append(f"QLoRA: de-quantised {replaced} 4-bit base weights to float32")
            except ImportError:
                model = load_float32(source.base_path)
                warnings.append(
                    "bitsandbytes is not installed, so the QLoRA adapter was merged into the "
                    "full-precision base rather than the 4-bit base it was trained on; answers "
                    "may differ slightly (pip install bitsandbytes and export again)"
                )
        else:
            model = load_float32(source.base_path)
        vocab = model.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > vocab:
            # Training added tokens and resized the embeddings; the adapter carries the new rows.
            model.resize_token_embeddings(len(tokenizer))
            notes.append(f"resized embeddings from {vocab} to {len(tokenizer)} tokens")
        model = merge_adapter(model, source.weights_dir)
        kind = source.adapter_type or "lora"
        notes.append(f"merged {kind} adapter into the float32 base {source.base_path}")
        return MergedModel(model, tokenizer, source, notes=notes, warnings=warnings)
    return MergedModel(model=model, tokenizer=tokenizer, source=source, notes=notes)
