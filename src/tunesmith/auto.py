"""Automatic hyperparameters: what a run does with every value written `auto`, in one place.

One function, `plan_run`, applies the rules below to the counts of a data set; the trainer
(`resolve_spec`, from train/setup.py) and `tunesmith data validate` (data/estimate.py) both call
it, so the prediction a user reads before training is the run. Every value's reason is kept in
the run's config.yaml (`auto_notes`).

How much to train is counted in example passes (one example seen once; epochs x examples):
  1. OpenAI's rule for hosted fine-tuning counts passes too: start at 3 epochs, clamp
     examples x epochs into [100, 25,000], 1..25 epochs. Its floor is ours: at least
     MIN_PASSES = 100 passes and at least one epoch (every example is seen), at most 25 epochs.
  2. Its 3 epochs are not: a LoRA learns a narrow task (a format, a label set) in about
     PASS_TARGET = 600 passes at the learning rate below; more passes cost time and add
     little. So passes = max(100, N, min(3 N, 600)): 10 examples -> 100 passes (10 epochs),
     100 -> 300 (3 epochs), 443 -> 600 (1.35 epochs), 600 and more -> one epoch.
     Measured (bench/auto_quality.py, BIG-bench intent_recognition, 443 train / 250 held
     out, default model, exact match from 0 %): 443 passes at 5e-4 -> 88.4 % in 166 s, 886 ->
     90.0 % in 366 s, 1,329 at 2e-4 -> 84.4 % in 413 s; the old 1,000 passes at 2e-4 -> 86.8 %.
How big a step is (`grad_accum`, in whole rows; a packed row holds several examples):
  3. small sets take smaller steps, so they still get enough updates: about
     passes / TARGET_STEPS examples per step (at least one row), at most
     MAX_TOKENS_PER_STEP tokens (large sets: ~16k tokens per step, as before);
  4. a run has at least MIN_STEPS optimizer steps where 25 epochs allow it (a tiny set packed
     into a few rows would otherwise take a handful of steps).
Learning rate (`learning_rate: auto`), x `lr_multiplier`: full fine-tuning 2e-5; an adapter
(LoRA, DoRA, QLoRA) 5e-4 on models under 1B parameters, 2e-4 up to 20B, 1e-4 above (small
models take larger steps: the sweep above put 5e-4 ahead of 2e-4 at every epoch count on the
135M default model; 2e-4 is the usual LoRA rate for 7B-13B models, 1e-4 beyond).
Validation during training (`eval.every_steps`, `eval.max_tokens`, when there is held-out
data): EVALS_PER_RUN evaluations, each on the same seeded sample of held-out rows of at most
MAX_VAL_TOKENS tokens and sized so all of them together cost about VAL_SHARE of the training
compute (a forward pass costs about half a training token). The full held-out set is scored
once, by the base-vs-tuned comparison at the end.
Early stopping (`early_stopping.enabled: auto`): on when there is held-out data and the run
trains an adapter (a full fine-tune's best checkpoint is the whole model and optimizer: turn
it on yourself). It stops when the best validation loss has not improved by more than
`min_delta` (auto: PLATEAU_DELTA of it) in `patience` evaluations, and final/ holds the best
weights.
A time budget (`time_budget`) then fits the steps to the time: `fit_steps_to_budget`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MIN_PASSES = 100
BASE_EPOCHS = 3
MAX_EPOCHS = 25
PASS_TARGET = 600
TARGET_STEPS = 100
MIN_STEPS = 30
MAX_TOKENS_PER_STEP = 16384
EVALS_PER_RUN = 6
VAL_SHARE = 0.15
MIN_VAL_TOKENS = 2048
MAX_VAL_TOKENS = 16384
PLATEAU_DELTA = 0.01
# Generation for evaluation (the comparison, evals): greedy answers in batches of at most
# EVAL_BATCH_ROWS prompts and EVAL_BATCH_TOKENS tokens (rows x (longest prompt + answer
# budget)). Decoding reads all the weights for every step, whatever the batch: on 2 CPU cores
# 48 prompts answered in batches of 48 took 17 s against 30 s in batches of 16, same answers.
EVAL_BATCH_ROWS = 64
EVAL_BATCH_TOKENS = 16384

FULL_LEARNING_RATE = 2e-5
# (models below this many parameters, adapter learning rate); larger models: the last rate
ADAPTER_LEARNING_RATES = ((1e9, 5e-4), (20e9, 2e-4), (math.inf, 1e-4))


def steps_per_epoch(n_rows: int, rows_per_step: int) -> int:
    return max(1, math.ceil(n_rows / max(1, rows_per_step)))


def auto_passes(n_examples: int) -> int:
    """Example passes by rules 1-2: max(100, N, min(3 N, PASS_TARGET)), within 1..25 epochs."""
    n = max(1, n_examples)
    passes = max(MIN_PASSES, n, min(BASE_EPOCHS * n, PASS_TARGET))
    return min(passes, MAX_EPOCHS * n)


def auto_learning_rate(
    adapter: str, lr_multiplier: float = 1.0, n_params: int | None = None
) -> tuple[float, str]:
    """(learning rate, why): by adapter and model size (unknown size: the 1B-20B rate)."""
    if adapter == "none":
        return FULL_LEARNING_RATE * lr_multiplier, f"{FULL_LEARNING_RATE:g} for full fine-tuning"
    size = n_params if n_params else 7e9
    rate = next(r for below, r in ADAPTER_LEARNING_RATES if size < below)
    where = f"{n_params / 1e9:.2g}B parameters" if n_params else "model size unknown"
    return rate * lr_multiplier, f"{rate:g} for an adapter on a model of {where}"


@dataclass
class Plan:
    """Every automatic value of a run, with the reason for each (`notes`)."""

    batch_size: int
    grad_accum: int
    epochs: int
    total_steps: int
    steps_per_epoch: int
    passes: int  # example passes the steps amount to
    learning_rate: float
    eval_every_steps: int | None
    val_max_tokens: int | None
    early_stopping: bool
    min_delta: float | str  # a number, or "auto" (PLATEAU_DELTA of the best loss)
    save_every_steps: int
    train_tokens: int  # tokens the run processes (rows x steps)
    val_tokens: int  # tokens all validations together process
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def examples_per_step(self) -> float:
        return self.passes / max(1, self.total_steps)


def plan_run(
    spec,  # RunSpec (values may be auto)
    *,
    n_examples: int,
    n_rows: int,
    row_tokens: int,
    n_val_rows: int,
    val_row_tokens: int,
    world_size: int = 1,
    batch_size: tuple[int, str] = (1, "1 packed row per micro-batch on CPU"),
    n_params: int | None = None,
) -> Plan:
    """Apply this module's rules to a data set: `n_examples` in `n_rows` rows (packed or not)
    holding `row_tokens` tokens; `n_val_rows` held-out rows of `val_row_tokens` tokens.
    `batch_size` is the automatic micro-batch and its reason (see `auto_batch_size`);
    `n_params`, the base model's size, picks the adapter learning rate."""
    notes: dict[str, str] = {}
    n, rows = max(1, n_examples), max(1, n_rows)
    per_row_examples = n / rows
    per_row_tokens = max(1.0, row_tokens / rows)
    bs = spec.batch_size
    if bs == "auto":
        bs, notes["batch_size"] = batch_size
    user_epochs = spec.epochs if spec.epochs != "auto" else None
    passes = auto_passes(n) if user_epochs is None else user_epochs * n

    ga = spec.grad_accum
    if ga == "auto":
        want_examples = max(1.0, passes / TARGET_STEPS)
        want_rows = max(1, round(want_examples / per_row_examples))
        token_cap = max(1, math.floor(MAX_TOKENS_PER_STEP / per_row_tokens))
        want_rows = min(want_rows, token_cap, rows)
        ga = max(1, math.ceil(want_rows / (bs * world_size)))
        notes["grad_accum"] = (
            f"~{passes / TARGET_STEPS:.0f} examples per step ({passes} passes / "
            f"{TARGET_STEPS} steps), at most {MAX_TOKENS_PER_STEP} tokens: "
            f"{bs * ga * world_size} rows of ~{per_row_examples:.1f} examples"
        )
    per_epoch = steps_per_epoch(rows, bs * ga * world_size)
    if user_epochs is not None:
        total = user_epochs * per_epoch
        if spec.max_steps and spec.max_steps < total:
            total = spec.max_steps
            notes["total_steps"] = f"max_steps={spec.max_steps} (before {user_epochs} epochs)"
    elif spec.max_steps:
        total = spec.max_steps
        notes["epochs"] = f"enough for max_steps={spec.max_steps}"
    else:
        total = max(1, math.ceil(passes / n * per_epoch))
        why = (
            f"{n} examples: max({MIN_PASSES}, N, min({BASE_EPOCHS} N, {PASS_TARGET})) = "
            f"{passes} example passes in {total} steps"
        )
        raised = min(MIN_STEPS, MAX_EPOCHS * per_epoch)
        if raised > total:
            why += f", raised to {raised} steps (at least {MIN_STEPS}, at most {MAX_EPOCHS} epochs)"
            total = raised
        notes["epochs"] = why
    epochs = user_epochs if user_epochs is not None else max(1, math.ceil(total / per_epoch))
    passes = round(total / per_epoch * n)

    lr = spec.learning_rate
    if lr == "auto":
        lr, why = auto_learning_rate(spec.adapter, spec.lr_multiplier, n_params)
        notes["learning_rate"] = f"{why} x lr_multiplier {spec.lr_multiplier:g}"
    train_tokens = round(total * bs * ga * world_size * per_row_tokens)

    every, val_max, val_tokens = None, None, 0
    if n_val_rows:
        every = spec.eval.every_steps
        if every == "auto":
            every = max(1, math.ceil(total / EVALS_PER_RUN))
            notes["eval.every_steps"] = f"about {EVALS_PER_RUN} validations per run"
        val_max = spec.eval.max_tokens
        if val_max == "auto":
            evals = max(1, total // every)
            share = round(2 * VAL_SHARE * train_tokens / evals)
            val_max = min(MAX_VAL_TOKENS, max(MIN_VAL_TOKENS, share))
            notes["eval.max_tokens"] = (
                f"a seeded sample of at most {val_max} held-out tokens per validation "
                f"(<= {MAX_VAL_TOKENS}, ~{VAL_SHARE:.0%} of the training compute); "
                "the full held-out set is scored once, by the comparison"
            )
        per_val = min(val_row_tokens, max(int(val_max), int(val_row_tokens / n_val_rows)))
        val_tokens = (total // every + (total % every != 0)) * per_val

    es = spec.early_stopping.enabled
    if es == "auto":
        es = bool(n_val_rows) and spec.adapter != "none"
        notes["early_stopping.enabled"] = ("on: " if es else "off: ") + (
            "held-out data and an adapter"
            if es
            else "no held-out data"
            if not n_val_rows
            else "full fine-tuning (a best checkpoint is the whole model and optimizer)"
        )
    save = spec.save_every_steps
    if save == "auto":
        save = max(1, math.ceil(total / (4 if spec.adapter == "none" else 10)))
        notes["save_every_steps"] = "about 10 checkpoints per run (4 for full fine-tuning)"
    return Plan(
        batch_size=int(bs),
        grad_accum=int(ga),
        epochs=int(epochs),
        total_steps=int(total),
        steps_per_epoch=per_epoch,
        passes=passes,
        learning_rate=float(lr),
        eval_every_steps=None if every is None else int(every),
        val_max_tokens=None if val_max is None else int(val_max),
        early_stopping=bool(es),
        min_delta=spec.early_stopping.min_delta,
        save_every_steps=int(save),
        train_tokens=train_tokens,
        val_tokens=int(val_tokens),
        notes=notes,
    )


def sample_rows(rows: list, max_tokens: int | None, seed: int) -> list:
    """The validation sample: rows in a seeded order until `max_tokens` (at least one row);
    all rows, in order, when they fit or there is no cap. The same rows at every validation,
    so two validations differ by the model only."""
    if max_tokens is None or sum(len(r) for r in rows) <= max_tokens:
        return list(rows)
    import random

    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    picked: list[int] = []
    used = 0
    for i in order:
        if picked and used + len(rows[i]) > max_tokens:
            continue
        picked.append(i)
        used += len(rows[i])
    return [rows[i] for i in sorted(picked)]


# ---------------------------------------------------------------------------------------------
# Time: a budget, and what a run costs on this machine
# ---------------------------------------------------------------------------------------------


def fmt_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class BudgetFit:
    steps: int  # the steps that fit
    planned: int
    message: str

    @property
    def cut(self) -> bool:
        return self.steps < self.planned


def fit_steps_to_budget(
    *,
    planned_steps: int,
    steps_per_epoch: int,
    budget_s: float,
    elapsed_s: float,
    done_steps: int,
    step_s: float,
    eval_s: float = 0.0,
    eval_every: int | None = None,
    reserve_s: float = 0.0,
) -> BudgetFit:
    """How many optimizer steps fit: the time left (budget - elapsed - `reserve_s` for the
    final save) over the measured cost of a step (`step_s`, plus `eval_s` every `eval_every`
    steps). Never fewer than the steps already done (+1), never more than planned."""
    per_step = step_s + (eval_s / eval_every if eval_every else 0.0)
    left = budget_s - elapsed_s - reserve_s
    fit = done_steps + max(0, math.floor(left / max(per_step, 1e-9)))
    fit = max(done_steps + 1 if done_steps < planned_steps else done_steps, min(planned_steps, fit))
    full_s = elapsed_s + (planned_steps - done_steps) * per_step
    if fit >= planned_steps:
        message = (
            f"{planned_steps / steps_per_epoch:.2g} epochs ({planned_steps} steps) take about "
            f"{fmt_duration(full_s)}: within the budget of {fmt_duration(budget_s)}"
        )
    else:
        message = (
            f"{planned_steps / steps_per_epoch:.2g} epochs ({planned_steps} steps) would take "
            f"{fmt_duration(full_s)}; {fit / steps_per_epoch:.2g} epochs ({fit} steps) fit in "
            f"{fmt_duration(budget_s)}"
        )
    return BudgetFit(fit, planned_steps, message)


STEP_EFFICIENCY = 0.55


def estimate_train_seconds(
    total_tokens: int, n_params: int, adapter: str = "lora", flops_per_second: float = 5e10
) -> float:
    """Rough wall time: ~6·N FLOPs per token for full fine-tuning, ~4·N with a frozen base
    (no weight gradients), at an achieved `flops_per_second` (measure it with `measure_flops`)."""
    per_token = (6 if adapter == "none" else 4) * n_params
    return total_tokens * per_token / max(flops_per_second, 1.0)


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
# Batch size, and resolving a whole spec once data and hardware are known
# ---------------------------------------------------------------------------------------------
#
# Batch size (`batch_size: auto`): 1 row on a CPU (a packed row already holds max_seq_len
# tokens; more rows only add memory). On CUDA: as many rows as fit in half the free memory
# after the weights, at ~34 bytes per token per layer per hidden unit of activations, 1..32.


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
    row_tokens: int | None = None,
    val_row_tokens: int | None = None,
    n_params: int | None = None,
):
    """Replace every `auto` in `spec` by `plan_run`'s values; return a ResolvedSpec with notes.
    Token counts default to full rows of max_seq_len when not given."""
    from tunesmith.config import ResolvedSpec

    seq = spec.data.max_seq_len
    batch = (1, "")
    if spec.batch_size == "auto":
        batch = auto_batch_size(device_type, seq, hidden, layers, weight_bytes)
    plan = plan_run(
        spec,
        n_examples=n_examples,
        n_rows=n_rows,
        row_tokens=row_tokens if row_tokens is not None else n_rows * seq,
        n_val_rows=n_val_rows,
        val_row_tokens=val_row_tokens if val_row_tokens is not None else n_val_rows * seq,
        world_size=world_size,
        batch_size=batch,
        n_params=n_params,
    )
    data = spec.model_dump()
    data.update(
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        grad_accum=plan.grad_accum,
        learning_rate=plan.learning_rate,
        save_every_steps=plan.save_every_steps,
        eval_every_steps=plan.eval_every_steps,
        total_steps=plan.total_steps,
        world_size=world_size,
        auto_notes=plan.notes,
    )
    data["eval"]["every_steps"] = plan.eval_every_steps or spec.eval.every_steps
    if plan.val_max_tokens is not None:
        data["eval"]["max_tokens"] = plan.val_max_tokens
    data["early_stopping"]["enabled"] = plan.early_stopping
    return ResolvedSpec.model_validate(data)
