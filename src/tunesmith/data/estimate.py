"""Automatic hyperparameters and a training-time estimate for a validated data set.

Why here: the validator shows the user, before training, what `epochs: auto` etc. will pick, so
it applies the trainer's own rules (`tunesmith.auto`) to the packed rows of this data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tunesmith.data.report import ValidationReport


def add_estimates(
    report: ValidationReport,
    *,
    n_params: int | None,
    lengths: Sequence[int] | None = None,
    adapter: str = "lora",
    max_seq_len: int | None = None,
    packing: bool = True,
    device_type: str = "cpu",
    model_config: dict[str, Any] | None = None,
    flops_per_second: float | Callable[[], float] | None = None,
) -> None:
    """Fill `hyperparameters` and `estimate` with the rules the trainer applies
    (`tunesmith.auto`): rows are packed examples (best-fit decreasing) when packing is on,
    batch size and accumulation are the trainer's automatic ones for this device."""
    from tunesmith import auto
    from tunesmith.config import DEFAULT_MAX_SEQ_LEN

    n = report.files[0].rows_ok if report.files else 0
    if n <= 0:
        return
    seq = max_seq_len or report.settings.get("max_seq_len") or DEFAULT_MAX_SEQ_LEN
    n_rows = n
    if packing and lengths:
        from tunesmith.data.packing import plan_bins

        n_rows = len(plan_bins([min(int(x), seq) for x in lengths], seq))
    cfg = model_config or {}
    batch = 1
    if hasattr(auto, "auto_batch_size"):
        batch, _ = auto.auto_batch_size(
            device_type,
            seq,
            int(cfg.get("hidden_size", 576)),
            int(cfg.get("num_hidden_layers", 30)),
            4 * (n_params or 0),
        )
    accum = auto.auto_grad_accum(n_rows, seq, batch, 1) if hasattr(auto, "auto_grad_accum") else 8
    per_epoch = auto.steps_per_epoch(n_rows, batch * accum)
    epochs = auto.auto_epochs(n, max(1, math.ceil(n / per_epoch)))
    report.hyperparameters = {
        "epochs": epochs,
        "examples_per_step": round(n / per_epoch, 1),
        "rows": n_rows,
        "batch_size": batch,
        "grad_accum": accum,
        "steps_per_epoch": per_epoch,
        "total_steps": per_epoch * epochs,
        "learning_rate": auto.auto_learning_rate(adapter),
        "adapter": adapter,
        "packing": packing,
        "max_seq_len": seq,
    }
    tokens = report.stats.get("tokens")
    if tokens is None or not n_params:
        return
    if callable(flops_per_second):
        flops_per_second = flops_per_second()
    flops = float(flops_per_second or auto.measure_flops())
    train_tokens = int(tokens["total"]["sum"]) * epochs
    report.estimate = {
        "train_tokens": train_tokens,
        "seconds": round(auto.estimate_train_seconds(train_tokens, n_params, adapter, flops), 1),
        "flops_per_second": round(flops),
        "n_params": n_params,
        "device": device_type,
    }


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
