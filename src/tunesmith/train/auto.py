"""Automatic hyperparameters. The rules are simple, documented and printed with every run.

Epochs (`epochs: auto`), given N training examples and E examples per optimizer step:
  1. start at 3 epochs;
  2. small sets: if 3 epochs give fewer than 100 optimizer steps, raise epochs to
     ceil(100 / steps_per_epoch), at most 25 (so ~100 steps without endless repetition);
  3. large sets: N >= 20,000 -> 2 epochs; N >= 100,000 -> 1 epoch.
Learning rate (`learning_rate: auto`): 2e-4 for LoRA/DoRA/QLoRA, 2e-5 for full fine-tuning,
times `lr_multiplier` when given.
"""

from __future__ import annotations

import math

MIN_STEPS = 100
BASE_EPOCHS = 3
MAX_EPOCHS = 25

LEARNING_RATES = {"lora": 2e-4, "dora": 2e-4, "qlora": 2e-4, "none": 2e-5}


def steps_per_epoch(n_examples: int, examples_per_step: int) -> int:
    return max(1, math.ceil(n_examples / max(1, examples_per_step)))


def auto_epochs(n_examples: int, examples_per_step: int) -> int:
    """Epochs by the rule in this module's docstring."""
    if n_examples >= 100_000:
        return 1
    if n_examples >= 20_000:
        return 2
    per_epoch = steps_per_epoch(n_examples, examples_per_step)
    if per_epoch * BASE_EPOCHS >= MIN_STEPS:
        return BASE_EPOCHS
    return min(MAX_EPOCHS, math.ceil(MIN_STEPS / per_epoch))


def auto_learning_rate(adapter: str, lr_multiplier: float = 1.0) -> float:
    return LEARNING_RATES.get(adapter, 2e-4) * lr_multiplier


def estimate_train_seconds(
    total_tokens: int, n_params: int, adapter: str = "lora", flops_per_second: float = 5e10
) -> float:
    """Rough wall time: ~6·N FLOPs per token for full fine-tuning, ~4·N with a frozen base
    (no weight gradients), at an achieved `flops_per_second` (measure it with `measure_flops`)."""
    per_token = (6 if adapter == "none" else 4) * n_params
    return total_tokens * per_token / max(flops_per_second, 1.0)


def measure_flops(seconds: float = 0.3, size: int = 512) -> float:
    """Achieved float32 matmul FLOP/s on this machine (a short benchmark), scaled by 0.35 for the
    fraction of peak a training step typically reaches on a CPU."""
    import time

    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        n += 1
    elapsed = time.perf_counter() - start
    return 0.35 * (2 * size**3 * n) / elapsed
