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


STEP_EFFICIENCY = 0.55


def measure_flops(seconds: float = 0.3, size: int = 512) -> float:
    """Achieved float32 matmul FLOP/s on this machine (a short benchmark), scaled by the share of
    it a packed LoRA step reaches on a CPU. The 0.55 is measured: one epoch of the throughput
    bench (200 chat examples, 28.3k tokens, default model, 2 cores) took 152 s; the raw probe
    read 168 GFLOP/s, so 0.55 estimates 164 s (0.35, before the fused LoRA path: 258 s)."""
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
    return STEP_EFFICIENCY * (2 * size**3 * n) / elapsed


# ---------------------------------------------------------------------------------------------
# Resolving a whole run spec (batch, accumulation, cadence) once data and hardware are known
# ---------------------------------------------------------------------------------------------
#
# Batch size (`batch_size: auto`): 1 row on a CPU (a packed row already holds max_seq_len
# tokens; more rows only add memory). On CUDA: as many rows as fit in half the free memory
# after the weights, at ~34 bytes per token per layer per hidden unit of activations, 1..32.
# Accumulation (`grad_accum: auto`): reach ~16k tokens per optimizer step
# (ceil(16384 / max_seq_len) rows over all processes), but keep at least 10 optimizer steps per
# epoch on small data sets (rows per step <= rows // 10).
# Eval cadence (`eval.every_steps: auto`): about 10 validations per run (when there is held-out
# data). Checkpoint cadence (`save_every_steps: auto`): about 10 checkpoints per run for
# adapters, 4 for full fine-tuning (a full checkpoint is the whole model + optimizer).

TARGET_TOKENS_PER_STEP = 16384
MIN_STEPS_PER_EPOCH = 10


def auto_batch_size(
    device_type: str, max_seq_len: int, hidden: int, layers: int, weight_bytes: int
) -> tuple[int, str]:
    if device_type != "cuda":
        return 1, "1 packed row per micro-batch on CPU"
    import torch

    free, _ = torch.cuda.mem_get_info()
    per_row = 34 * max_seq_len * hidden * layers
    budget = 0.5 * free - weight_bytes
    bs = int(max(1, min(32, budget // max(1, per_row))))
    return bs, f"{bs} rows fit half of free GPU memory ({free / 2**30:.1f} GiB free)"


def auto_grad_accum(n_rows: int, max_seq_len: int, batch_size: int, world_size: int) -> int:
    target_rows = math.ceil(TARGET_TOKENS_PER_STEP / max_seq_len)
    target_rows = min(target_rows, max(1, n_rows // MIN_STEPS_PER_EPOCH))
    return max(1, math.ceil(target_rows / (batch_size * world_size)))


def resolve_spec(
    spec,  # RunSpec
    *,
    n_examples: int,
    n_rows: int,
    n_val_rows: int,
    world_size: int,
    device_type: str,
    hidden: int,
    layers: int,
    weight_bytes: int,
):
    """Replace every `auto` in `spec` by the rules above; return a ResolvedSpec with notes."""
    from tunesmith.config import ResolvedSpec

    notes: dict[str, str] = {}
    bs = spec.batch_size
    if bs == "auto":
        bs, notes["batch_size"] = auto_batch_size(
            device_type, spec.data.max_seq_len, hidden, layers, weight_bytes
        )
    ga = spec.grad_accum
    if ga == "auto":
        ga = auto_grad_accum(n_rows, spec.data.max_seq_len, bs, world_size)
        notes["grad_accum"] = (
            f"~{TARGET_TOKENS_PER_STEP} tokens per step, >= {MIN_STEPS_PER_EPOCH} steps per epoch"
        )
    per_epoch = steps_per_epoch(n_rows, bs * ga * world_size)
    epochs = spec.epochs
    if epochs == "auto":
        if spec.max_steps:
            epochs = max(1, math.ceil(spec.max_steps / per_epoch))
            notes["epochs"] = f"enough for max_steps={spec.max_steps}"
        else:
            epochs = auto_epochs(n_examples, math.ceil(n_examples / per_epoch))
            notes["epochs"] = (
                f"{n_examples} examples, {per_epoch} steps/epoch: start at {BASE_EPOCHS}, "
                f"raise toward {MIN_STEPS} steps (max {MAX_EPOCHS}), 2 at 20k, 1 at 100k examples"
            )
    total = epochs * per_epoch
    if spec.max_steps:
        total = min(total, spec.max_steps)
    lr = spec.learning_rate
    if lr == "auto":
        lr = auto_learning_rate(spec.adapter, spec.lr_multiplier)
        notes["learning_rate"] = f"{spec.adapter} default x lr_multiplier {spec.lr_multiplier}"
    every = spec.eval.every_steps
    eval_every = None
    if n_val_rows:
        eval_every = max(1, math.ceil(total / 10)) if every == "auto" else int(every)
        if every == "auto":
            notes["eval.every_steps"] = "about 10 validations per run"
    save = spec.save_every_steps
    if save == "auto":
        save = max(1, math.ceil(total / (4 if spec.adapter == "none" else 10)))
        notes["save_every_steps"] = "about 10 checkpoints per run (4 for full fine-tuning)"
    data = spec.model_dump()
    data.update(
        epochs=epochs,
        batch_size=bs,
        grad_accum=ga,
        learning_rate=lr,
        save_every_steps=save,
        eval_every_steps=eval_every,
        total_steps=total,
        world_size=world_size,
        auto_notes=notes,
    )
    data["eval"]["every_steps"] = eval_every if eval_every is not None else every
    return ResolvedSpec.model_validate(data)
