"""Automatic hyperparameters and a time estimate for a validated data set.

Why here: the validator shows the user, before training, what `epochs: auto` etc. will pick, so
it applies the trainer's own plan (`tunesmith.auto.plan_run`) to the packed rows of this data,
and how long the run (setup, steps, validations) and the comparison after it will take: from
this machine's last measured speed for the model when there is one (models/speed.py), else
from a matmul probe.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tunesmith.data.report import ValidationReport

SETUP_S = 5.0  # loading the model and tokenizing before the first step (default model, CPU)
MEMORY_BW = 10e9  # bytes/s a decode step reads the weights at (2-core CPU: ~10 GB/s measured)
QUICK_S = 300.0  # a budget a long run is offered instead of half its time: five minutes


def add_estimates(
    report: ValidationReport,
    *,
    n_params: int | None,
    lengths: Sequence[int] | None = None,
    val_lengths: Sequence[int] | None = None,
    adapter: str = "lora",
    max_seq_len: int | None = None,
    packing: bool = True,
    device_type: str = "cpu",
    model_config: dict[str, Any] | None = None,
    flops_per_second: float | Callable[[], float] | None = None,
    measured: Any = None,
    spec: Any = None,
) -> None:
    """Fill `hyperparameters` and `estimate` with the plan the trainer makes
    (`tunesmith.auto.plan_run`, the same function): rows are packed examples (best-fit
    decreasing) when packing is on; `val_lengths` are the held-out examples' token counts.
    `spec` (a RunSpec) carries the user's own values and `time_budget`; `measured` (a
    models.speed.Speed) is this machine's last measured speed for the model, which the
    estimate prefers to the matmul probe's prediction."""
    from tunesmith import auto
    from tunesmith.config import DEFAULT_MAX_SEQ_LEN, RunSpec

    n = report.files[0].rows_ok if report.files else 0
    if n <= 0:
        return
    seq = max_seq_len or report.settings.get("max_seq_len") or DEFAULT_MAX_SEQ_LEN
    if spec is None:
        spec = RunSpec.model_validate(
            {"adapter": adapter, "data": {"max_seq_len": seq, "packing": packing}}
        )
    rows, row_tokens = _rows(lengths, seq, packing, n)
    val_rows, val_tokens = _rows(val_lengths, seq, packing, len(val_lengths or ()))
    cfg = model_config or {}
    batch = auto.auto_batch_size(
        device_type,
        seq,
        int(cfg.get("hidden_size", 576)),
        int(cfg.get("num_hidden_layers", 30)),
        4 * (n_params or 0),
    )
    plan = auto.plan_run(
        spec,
        n_examples=n,
        n_rows=rows,
        row_tokens=row_tokens,
        n_val_rows=val_rows,
        val_row_tokens=val_tokens,
        batch_size=batch,
        n_params=n_params,
    )
    report.hyperparameters = {
        "epochs": plan.epochs,
        "passes": plan.passes,
        "examples_per_step": round(plan.examples_per_step, 1),
        "rows": rows,
        "batch_size": plan.batch_size,
        "grad_accum": plan.grad_accum,
        "steps_per_epoch": plan.steps_per_epoch,
        "total_steps": plan.total_steps,
        "learning_rate": plan.learning_rate,
        "adapter": spec.adapter,
        "packing": packing,
        "max_seq_len": seq,
        "eval_every_steps": plan.eval_every_steps,
        "eval_max_tokens": plan.val_max_tokens,
        "early_stopping": plan.early_stopping,
        "notes": plan.notes,
    }
    if report.stats.get("tokens") is None or not n_params:
        return
    if measured is not None:
        rate, basis = float(measured.tokens_per_s), measured.describe()
        val_rate = float(measured.val_tokens_per_s or 2 * rate)
        flops = None
    else:
        if callable(flops_per_second):
            flops_per_second = flops_per_second()
        flops = float(flops_per_second or auto.measure_flops())
        per_token = (6 if spec.adapter == "none" else 4) * n_params
        rate = flops / per_token
        val_rate = 2 * rate  # a forward pass: about half a training token
        basis = (
            f"a matmul probe ({flops / 1e9:.0f} GFLOP/s achieved, "
            f"{per_token / 1e9:.2f} GFLOP per token)"
        )
    train_s = plan.train_tokens / max(rate, 1e-9)
    val_s = plan.val_tokens / max(val_rate, 1e-9)
    achieved = flops or rate * (6 if spec.adapter == "none" else 4) * n_params
    compare_s = _compare_seconds(
        val_lengths, report, n_params=n_params, val_rate=val_rate, flops=achieved
    )
    steps_s = train_s / plan.total_steps
    report.estimate = {
        "train_tokens": plan.train_tokens,
        "val_tokens": plan.val_tokens,
        "seconds": round(SETUP_S + train_s + val_s, 1),  # the training run
        "train_seconds": round(train_s, 1),
        "validation_seconds": round(val_s, 1),
        "setup_seconds": SETUP_S,
        "compare_seconds": round(compare_s, 1) if compare_s is not None else None,
        "total_seconds": round(SETUP_S + train_s + val_s + (compare_s or 0.0), 1),
        "tokens_per_s": round(rate, 1),
        "basis": basis,
        "flops_per_second": round(flops) if flops else None,
        "n_params": n_params,
        "device": device_type,
    }
    fit_args: dict[str, Any] = {
        "planned_steps": plan.total_steps,
        "steps_per_epoch": plan.steps_per_epoch,
        "elapsed_s": SETUP_S,
        "done_steps": 0,
        "step_s": steps_s,
        "eval_s": val_s / max(1, plan.total_steps // (plan.eval_every_steps or plan.total_steps)),
        "eval_every": plan.eval_every_steps,
    }
    if spec.time_budget:
        fit = auto.fit_steps_to_budget(budget_s=float(spec.time_budget), **fit_args)
        report.estimate["time_budget"] = {
            "budget_s": spec.time_budget,
            "steps": fit.steps,
            "message": fit.message,
        }
    else:
        full = SETUP_S + train_s + val_s
        # a long run is offered the quick budget (minutes, as the demo takes); a short one, half
        budget = _nice_budget(QUICK_S if full > 2 * QUICK_S else full / 2)
        if budget is not None:
            fit = auto.fit_steps_to_budget(budget_s=budget, **fit_args)
            report.estimate["budget_hint"] = (
                f"--time-budget {_budget_text(budget)} would train {fit.steps} of "
                f"{plan.total_steps} steps ({fit.steps / plan.steps_per_epoch:.2g} epochs)"
            )


def _rows(lengths: Sequence[int] | None, seq: int, packing: bool, n: int) -> tuple[int, int]:
    """(rows, tokens) the examples make: packed best-fit when packing is on."""
    if not lengths:
        return n, n * seq
    cut = [min(int(x), seq) for x in lengths]
    if not packing:
        return len(cut), sum(cut)
    from tunesmith.data.packing import plan_bins

    return len(plan_bins(cut, seq)), sum(cut)


def _compare_seconds(
    val_lengths: Sequence[int] | None,
    report: ValidationReport,
    *,
    n_params: int,
    val_rate: float,
    flops: float,
) -> float | None:
    """The base-vs-tuned comparison on the held-out file: both models read every prompt and
    decode up to the answer budget (answers 25 % + 16 tokens longer than the longest
    reference), in generation's batches (auto.EVAL_BATCH_ROWS prompts, EVAL_BATCH_TOKENS
    tokens); a decode step costs reading the weights plus its FLOPs."""
    if not val_lengths:
        return None
    tokens = report.stats.get("tokens") or {}
    longest = float((tokens.get("trained") or {}).get("max") or 64)
    new_tokens = min(512.0, longest * 1.25 + 16)
    from tunesmith.auto import EVAL_BATCH_ROWS, EVAL_BATCH_TOKENS

    n = len(val_lengths)
    width = sum(val_lengths) / n + new_tokens  # a typical batch: prompts are sorted by length
    rows = max(1, min(EVAL_BATCH_ROWS, n, int(EVAL_BATCH_TOKENS // width)))
    batches = math.ceil(n / rows)
    step_s = 4 * n_params / MEMORY_BW + 2 * n_params * rows / max(flops, 1.0)
    prefill_s = sum(val_lengths) / max(val_rate, 1e-9)
    return 2 * (prefill_s + batches * new_tokens * step_s)


def _nice_budget(seconds: float) -> float | None:
    """A round budget near `seconds` (None when the run is short anyway)."""
    if seconds < 60:
        return None
    minutes = max(1, round(seconds / 60))
    return 60.0 * minutes


def _budget_text(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes}m" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def count_parameters(model_dir: Path | None) -> int | None:
    """Parameters stored in a model directory's safetensors files, from their headers only."""
    if model_dir is None:
        return None
    import struct

    total = 0
    files = sorted(Path(model_dir).glob("*.safetensors"))
    for file in files:
        with file.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for key, info in header.items():
            if key == "__metadata__":
                continue
            n = 1
            for d in info.get("shape", []):
                n *= d
            total += n
    return total or None
