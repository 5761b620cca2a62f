"""Load a resolved model and its tokenizer onto the right device, in the right dtype.

Device: CUDA when available, else CPU. Dtype: bf16 on a CUDA GPU that supports it, else
float32. We never *load* weights in bf16 on a CPU by ourselves: on CPUs without native bf16
(AVX2, no AMX) it is many times slower than float32, and where it is fast, training still wants
float32 LoRA weights. CPU training instead keeps float32 weights and, where a measured probe
says bf16 products are clearly faster (models/precision.py), runs the frozen base's products
from a bf16 copy (train/fast_lora.py). A user may still ask for bf16 weights explicitly.
No remote code and no pickles: `trust_remote_code=False`, safetensors only. Nothing is
fetched: every transformers/peft call is `local_files_only` unless downloads are allowed
(`TUNESMITH_ALLOW_DOWNLOADS=1`, see registry.py).

Model files are checked before transformers reads them (`check_model_dir`), so a damaged or
unusable model is one line naming the file and what is wrong: a truncated safetensors file,
pickle-only weights, an architecture transformers does not know (we never pass
`trust_remote_code`, and never suggest it), a chat template the Jinja sandbox blocks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import ModelError
from tunesmith.events import Reporter
from tunesmith.models.registry import ModelRef, downloads_allowed, prepare, resolve

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
MAX_SAFETENSORS_HEADER = 100 << 20  # safetensors' own limit

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


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if "trust_remote_code" in text:  # transformers' advice; we never run a model's own code
        return "it needs code shipped with the model, which tunesmith never runs"
    return text[:300]


def check_safetensors(file: Path) -> None:
    """A ModelError naming `file` unless its header is whole and the tensor data it declares
    is all there (a truncated download or copy fails here, not deep inside a loader)."""
    try:
        size = file.stat().st_size
        with file.open("rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or n > min(size - 8, MAX_SAFETENSORS_HEADER):
                raise ModelError(
                    f"{file} is not a complete safetensors file ({size} bytes: empty, cut "
                    "short or not safetensors)",
                    hint="copy or download it again",
                )
            header = json.loads(fh.read(n))
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
    except OSError as exc:
        raise ModelError(f"cannot read {file}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        raise ModelError(
            f"{file} has a damaged safetensors header", hint="copy or download it again"
        ) from None
    if 8 + n + end > size:
        raise ModelError(
            f"{file} is truncated: its header declares {8 + n + end} bytes, the file has {size}",
            hint="the copy or download was cut short; fetch the file again",
        )


def check_config(path: Path) -> None:
    """config.json must name an architecture transformers implements itself."""
    config_file = path / "config.json"
    if not config_file.is_file():
        return
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{config_file} is not readable JSON: {_first_line(exc)}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{config_file} must hold a JSON object")
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        custom = " and ships its own code (auto_map)" if "auto_map" in config else ""
        raise ModelError(
            f"{config_file}: model_type {model_type!r} is not an architecture transformers "
            f"implements{custom}; tunesmith never runs code that comes with a model",
            hint="use a model of a standard architecture (llama, qwen2, mistral, gemma, ...)",
        )


def check_model_dir(path: Path) -> None:
    """The weights of a model directory: safetensors only (pickles are never loaded), each one
    complete; and a config transformers can build without remote code."""
    check_config(path)
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ModelError(
                f"{path} holds only pickle weights ({pickles[0]}), which can run code when "
                "loaded; tunesmith loads safetensors only",
                hint="convert them to safetensors with a tool you trust, on a machine you trust",
            )
        raise ModelError(f"{path} holds no *.safetensors weights")
    for file in weights:
        check_safetensors(file)


def _template_file(path: Path) -> Path:
    for name in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json"):
        if (path / name).is_file():
            return path / name
    return path


def check_chat_template(tok: Any, path: Path) -> None:
    """Render a sample through the chat template: a template the Jinja sandbox blocks (it
    reaches for Python internals) or that does not parse is refused, naming its file. Other
    refusals (e.g. no system role) are the template's rules, reported per row later."""
    from jinja2.exceptions import SecurityError, TemplateSyntaxError

    samples = [
        [{"role": "user", "content": "Hi"}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
        ],
    ]
    for sample in samples:
        try:
            tok.apply_chat_template(sample, tokenize=False, add_generation_prompt=True)
        except SecurityError as exc:
            raise ModelError(
                f"{_template_file(path)}: the chat template does something the template "
                f"sandbox blocks ({_first_line(exc)}); it is not rendered",
                hint="use the model's original chat template",
            ) from None
        except TemplateSyntaxError as exc:
            line = f":{exc.lineno}" if exc.lineno else ""
            raise ModelError(
                f"{_template_file(path)}{line}: the chat template is not valid Jinja: {exc.message}"
            ) from None
        except Exception:
            continue


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    path = Path(path)
    check_config(path)
    try:
        tok = AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=False, local_files_only=not downloads_allowed()
        )
    except (MemoryError, ModelError):
        raise
    except Exception as exc:
        raise ModelError(f"cannot load the tokenizer in {path}: {_first_line(exc)}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise ModelError(f"model at {path} has no chat template", hint="use an instruct/chat model")
    check_chat_template(tok, path)
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
    check_model_dir(path)
    local = not downloads_allowed()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dt, trust_remote_code=False, use_safetensors=True,
            local_files_only=local, **kwargs,
        )  # fmt: skip
    except MemoryError:
        raise
    except Exception as exc:
        raise ModelError(f"could not load model from {path}: {_first_line(exc)}") from None
    if ref.adapter is not None:
        from peft import PeftModel

        weights = ref.adapter / "adapter_model.safetensors"
        if not weights.is_file():  # peft would go looking for it on the hub
            raise ModelError(f"adapter {ref.adapter} has no adapter_model.safetensors")
        check_safetensors(weights)
        try:
            model = PeftModel.from_pretrained(
                model, str(ref.adapter), is_trainable=False, local_files_only=True
            )
        except MemoryError:
            raise
        except Exception as exc:
            raise ModelError(
                f"could not load the adapter {ref.adapter}: {_first_line(exc)}"
            ) from None
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
