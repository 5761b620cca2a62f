"""Which weights train: LoRA, DoRA, QLoRA (4-bit NF4 base via bitsandbytes) or all of them.

We stand on peft for adapters so the result is a plain peft adapter anyone can load. QLoRA
quantises the frozen base to NF4 at load time; bitsandbytes >= 0.45 runs 4-bit on CPUs too
(slower than float32 there: it saves memory, not time).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from tunesmith.errors import ConfigError


@dataclass
class TrainableInfo:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(1, self.total)

    def __str__(self) -> str:
        return f"trainable parameters: {self.trainable:,} of {self.total:,} ({self.percent:.3f}%)"


def count_parameters(model: Any) -> TrainableInfo:
    """Trainable and total parameters; 4-bit packed weights count as their real size."""
    trainable = total = 0
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        if type(p).__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if p.requires_grad:
            trainable += n
    return TrainableInfo(trainable, total)


def apply_adapter(model: Any, spec: Any) -> Any:
    """Return the model to train: peft-wrapped for lora/dora/qlora, itself for full."""
    model.config.use_cache = False
    if spec.gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if spec.adapter == "none":
        for p in model.parameters():
            p.requires_grad_(True)
        model.train()
        return model

    from peft import get_peft_model, prepare_model_for_kbit_training

    from tunesmith.models.adapters import lora_config

    if spec.adapter == "qlora":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=spec.gradient_checkpointing
            )
    targets = spec.lora.target_modules
    try:
        config = lora_config(spec)
        with warnings.catch_warnings():  # peft still asks transformers for a renamed property
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(
            f"lora.target_modules {targets!r} does not fit this model: {exc}".splitlines()[0],
            where="lora.target_modules",
            hint="use all-linear or names such as [q_proj, v_proj]",
        ) from None
    peft_model.train()
    return peft_model


def save_final(model: Any, tokenizer: Any, out_dir: Any, *, state_dict: dict | None = None) -> None:
    """Write the result: a peft adapter or full HF weights (safetensors) + tokenizer/template."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(str(out), safe_serialization=True)
    else:
        kwargs = {"state_dict": state_dict} if state_dict is not None else {}
        model.config.use_cache = True
        model.save_pretrained(str(out), safe_serialization=True, **kwargs)
    tokenizer.save_pretrained(str(out))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and not (out / "chat_template.jinja").exists():
        (out / "chat_template.jinja").write_text(template, encoding="utf-8")
