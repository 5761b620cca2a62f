"""Load a resolved model and its tokenizer onto the right device, in the right dtype.

Device: CUDA when available, else CPU. Dtype: bf16 on a CUDA GPU that supports it, else
float32. We never pick bf16 on a CPU by ourselves: on CPUs without native bf16 (AVX2, no AMX)
it is many times slower than float32. A user may still ask for it explicitly.
No remote code and no pickles: `trust_remote_code=False`, safetensors only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import ModelError
from tunesmith.events import Reporter
from tunesmith.models.registry import ModelRef, prepare, resolve

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
}


def pick_device(device: str | None = None) -> Any:
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelError(f"unknown device '{device}'", hint="use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            "device 'cuda' was asked for but no CUDA GPU is available", hint="use --device cpu"
        )
    return dev


def pick_dtype(device: Any, dtype: str | None = None) -> Any:
    import torch

    if dtype in (None, "", "auto"):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    key = DTYPES.get(str(dtype).lower())
    if key is None:
        raise ModelError(f"unknown dtype '{dtype}'", hint="use auto, float32, bf16 or fp16")
    return getattr(torch, key)


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Every token that ends an assistant turn: eos ids from the generation config and the
    tokenizer, plus the chat template's end-of-turn marker when the vocabulary has one."""
    ids: list[int] = []

    def add(value: Any) -> None:
        if value is None:
            return
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)

    if generation_config is not None:
        add(generation_config.eos_token_id)
    add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        if marker in vocab:
            add(vocab[marker])
    return ids


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise ModelError(f"model at {path} has no chat template", hint="use an instruct/chat model")
    return tok


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    ref: ModelRef
    path: Path
    device: Any
    dtype: Any

    @property
    def stop_token_ids(self) -> list[int]:
        return stop_token_ids(self.tokenizer, getattr(self.model, "generation_config", None))


def resolve_path(name: str | Path, on_event: Reporter | None = None) -> Path:
    """Resolve a model name to a loadable HF directory (converting/caching once; a conversion
    reports `progress` events, phase `pull`, to `on_event`)."""
    return prepare(resolve(name), on_event=on_event)


def load_model(
    name: str | Path,
    *,
    device: str | None = None,
    dtype: str | None = None,
    on_event: Reporter | None = None,
    **kwargs: Any,
) -> LoadedModel:
    """Load model + tokenizer for anything the registry resolves (a first use of a packaged
    GGUF converts it once, reporting `progress` events, phase `pull`, to `on_event`)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress display, not one bar per weight file
    ref = resolve(name)
    path = prepare(ref, on_event=on_event)
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    # An adapter dir carries the tokenizer and chat template it was trained with.
    adapter = ref.adapter
    has_tok = adapter is not None and (adapter / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(adapter if has_tok and adapter else path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dt, trust_remote_code=False, use_safetensors=True, **kwargs
        )
    except OSError as exc:
        raise ModelError(f"could not load model from {path}: {exc}".splitlines()[0]) from None
    if ref.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(ref.adapter), is_trainable=False)
    model.to(dev)
    model.eval()
    return LoadedModel(model, tokenizer, ref, path, dev, dt)


def quantization_config(adapter: str) -> Any:
    """bitsandbytes NF4 config for loading a base in 4 bits for QLoRA (None otherwise)."""
    from tunesmith.errors import ConfigError

    if adapter != "qlora":
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(
            "adapter 'qlora' needs bitsandbytes, which is not installed",
            hint="pip install 'tunesmith[qlora]'",
        ) from None
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )
