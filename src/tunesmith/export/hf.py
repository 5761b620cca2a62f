"""Save a merged model as a plain Hugging Face directory.

The result loads with nothing but `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained`: safetensors weights, the tokenizer with the chat template the
model was trained with, and a generation config whose eos list holds every token that ends an
assistant turn (so plain `model.generate` stops where tunesmith's engine stops).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.export.common import ExportError

HF_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def export_generation_config(model: Any, tokenizer: Any) -> Any:
    """The base's generation config with bos/eos/pad taken from the tokenizer and template."""
    from transformers import GenerationConfig

    from tunesmith.models.load import stop_token_ids

    base = getattr(model, "generation_config", None)
    gen = GenerationConfig.from_dict(base.to_dict()) if base is not None else GenerationConfig()
    stops = stop_token_ids(tokenizer, base)
    gen.eos_token_id = stops[0] if len(stops) == 1 else stops
    if tokenizer.pad_token_id is not None:
        gen.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        gen.bos_token_id = tokenizer.bos_token_id
    return gen


def save_hf(model: Any, tokenizer: Any, out_dir: Path, *, dtype: str = "f32") -> list[Path]:
    """Write `model` and `tokenizer` into `out_dir` (which the caller makes atomic)."""
    import torch

    if dtype not in HF_DTYPES:
        raise ExportError(
            f"unknown dtype '{dtype}' for the hf format", hint=f"use one of {', '.join(HF_DTYPES)}"
        )
    if not getattr(tokenizer, "chat_template", None):
        raise ExportError("the tokenizer has no chat template to export")
    model = model.to(getattr(torch, HF_DTYPES[dtype]))
    model.generation_config = export_generation_config(model, tokenizer)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    written = sorted(p for p in Path(out_dir).iterdir() if p.is_file())
    if not any(p.suffix == ".safetensors" for p in written):
        raise ExportError("saving the model wrote no safetensors file")
    return written
