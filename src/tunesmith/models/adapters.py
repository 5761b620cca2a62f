"""The peft adapter a run spec describes, built in one place.

Training (`train/adapters.py`) wraps the base model with it, and a checkpoint used as a model
(`models/checkpoint.py`) rebuilds the very same adapter around its base before loading the
checkpoint's weights into it: both must agree on every LoRA setting, so neither spells them.
"""

from __future__ import annotations

from typing import Any


def lora_config(spec: Any) -> Any:
    """peft's LoraConfig for a spec with adapter lora, dora or qlora (`spec.lora` settings)."""
    from peft import LoraConfig

    return LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=spec.lora.target_modules,
        use_dora=spec.adapter == "dora",
        bias="none",
        task_type="CAUSAL_LM",
    )
