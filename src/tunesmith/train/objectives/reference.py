"""DPO's reference log-probs: computed once from the initial policy, cached on disk.

Why no reference model: DPO compares the policy with the model it started from. That model's
log-probs of each pair's answers never change during the run, so they are computed once,
before the first step, and kept with the rows — no second copy of the base in memory, no
second forward per step. The initial policy is, for LoRA, the model with the adapter disabled
(a fresh adapter is the identity: B = 0, so the two are the same function); on top of an
earlier SFT adapter (`--model RUN_DIR`) it is that SFT model (train/stacking.py folds it into
the frozen weights); for full fine-tuning it is the base, before any step.

Why a disk cache: the pass costs about a third of an epoch (a forward over every pair), and a
rerun or a beta sweep on the same data needs exactly the same numbers. The cache file is
`$TUNESMITH_HOME/cache/dpo-reference/<key>.safetensors`, keyed by SHA-256 of everything the
numbers depend on: the token ids and loss positions of every train and validation row (so the
data, its split, the chat template, max_seq_len and truncation), the data files' SHA-256, the
base weights' hash, the earlier adapter's hash (if any), the dtypes, quantisation and device
type. Beta is not part of it: a beta sweep reuses one pass. A resumed run reads it back (or,
without the cache, recomputes it from the initial weights, before the checkpoint is restored),
so it continues exactly like an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from tunesmith import events
from tunesmith.train import distributed as dist
from tunesmith.train.objectives.preference import PairRow, blank_pair, collate_pairs
from tunesmith.train.objectives.preference import completion_logps as _logps

CACHE_VERSION = 1
PAIRS_PER_BATCH = 8


def cache_dir() -> Path:
    from tunesmith.models.registry import tunesmith_home

    return tunesmith_home() / "cache" / "dpo-reference"


def rows_digest(rows: Sequence[PairRow]) -> str:
    """SHA-256 of every pair's token ids and labels, in order."""
    h = hashlib.sha256()
    for r in rows:
        for seq in (r.chosen, r.rejected):
            h.update(json.dumps([seq.input_ids, seq.labels], separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def cache_key(ctx: Any) -> tuple[str, dict[str, Any]]:
    """(key, what went into it) for this run's reference log-probs."""
    manifest = ctx.run.manifest()
    spec = ctx.spec
    data = manifest.get("data") or {}
    parts = {
        "version": CACHE_VERSION,
        "train_sha256": data.get("train_sha256"),
        "validation_sha256": data.get("validation_sha256"),
        "rows_sha256": rows_digest(list(ctx.rows) + list(ctx.val_rows)),
        "n_train": len(ctx.rows),
        "n_validation": len(ctx.val_rows),
        "base_model_sha256": manifest.get("base_model_sha256") or str(spec.model),
        "base_adapter_sha256": (manifest.get("base_adapter") or {}).get("sha256"),
        "max_seq_len": spec.data.max_seq_len,
        "weights_dtype": str(next(ctx.model.parameters()).dtype),
        "autocast": str(ctx.autocast_dtype),
        "quantized": spec.adapter == "qlora",
        "device_type": ctx.device.type,
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest(), parts


def read_cache(path: Path, n_train: int, n_val: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached (train, validation) log-probs, or None when absent or not of this shape."""
    if not path.is_file():
        return None
    try:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        train, val = tensors["train"], tensors["validation"]
    except Exception:  # a damaged cache is a miss, never an error
        return None
    if tuple(train.shape) != (n_train, 2) or tuple(val.shape) != (n_val, 2):
        return None
    if not (torch.isfinite(train).all() and torch.isfinite(val).all()):
        return None
    return train, val


def write_cache(path: Path, train: torch.Tensor, val: torch.Tensor, parts: dict) -> None:
    from safetensors.torch import save

    from tunesmith.io import atomic_write

    meta = {"key_parts": json.dumps(parts, sort_keys=True, default=str)}
    blob = save({"train": train.contiguous(), "validation": val.contiguous()}, metadata=meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, blob)


@contextlib.contextmanager
def initial_policy(model: Any) -> Iterator[str]:
    """The model as it was before any step, without the cost of a fresh adapter: peft's
    adapter disabled when every adapter is still the identity (all LoRA B = 0), else the model
    as it is (called before the first step, it is the initial policy either way)."""
    identity = hasattr(model, "disable_adapter") and all(
        not p.any() for n, p in model.named_parameters() if "lora_B" in n or "lora_embedding_B" in n
    )
    if identity:
        with model.disable_adapter():
            yield "the adapter disabled"
    else:
        yield "the initial weights"


def _autocast(device: torch.device, dtype: Any) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def compute(ctx: Any, rows: Sequence[PairRow], pad_id: int, phase: str) -> tuple[torch.Tensor, str]:
    """(len(rows) x 2 float64 summed completion log-probs of the initial policy, how it was
    taken). Rows are sorted by length and batched (little padding); rank r takes every
    world-th row of that order, the ranks sum their parts, and every rank runs the same number
    of forwards (FSDP needs it)."""
    out = torch.zeros(len(rows), 2, dtype=torch.float64)
    if not rows:
        return out, "nothing to do"
    world, rank = ctx.info.world_size, ctx.info.rank
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    mine = order[rank::world]
    n_batches = math.ceil(math.ceil(len(order) / world) / PAIRS_PER_BATCH)
    model = ctx.model
    was_training = model.training
    model.eval()
    try:
        with initial_policy(model) as how:
            for b in range(n_batches):
                idx = mine[b * PAIRS_PER_BATCH : (b + 1) * PAIRS_PER_BATCH]
                batch_rows = [rows[i] for i in idx] or [blank_pair(rows[0])]
                batch = collate_pairs(batch_rows, pad_id, ctx.device)
                with _autocast(ctx.device, ctx.autocast_dtype):
                    logps, _ = _logps(
                        model, batch["input_ids"], batch["position_ids"], batch["labels"]
                    )
                logps = logps.double().cpu()
                half = logps.shape[0] // 2
                for k, i in enumerate(idx):
                    out[i, 0], out[i, 1] = logps[k], logps[half + k]
                if ctx.info.is_main:
                    ctx.report(
                        events.progress(
                            phase, b + 1, n_batches, "reference log-probs", unit="batches"
                        )
                    )
    finally:
        model.train(was_training)
    return dist.all_reduce_sum(out), how


def attach(ctx: Any, pad_id: int, *, use_cache: bool = True) -> None:
    """Fill every train and validation row's reference log-probs: from the cache when it holds
    this run's (saying so), else by one pass over the initial policy (then cached)."""
    key, parts = cache_key(ctx)
    path = cache_dir() / f"{key}.safetensors"
    n_train, n_val = len(ctx.rows), len(ctx.val_rows)
    found = read_cache(path, n_train, n_val) if use_cache and ctx.info.is_main else None
    hit = bool(dist.broadcast_object(found is not None))  # every rank takes the same branch
    if hit and found is None:
        found = read_cache(path, n_train, n_val)
        hit = found is not None  # pragma: no cover - a file another rank cannot read
    if hit and found is not None:
        train, val = found
        ctx.report(
            events.message(
                f"reference log-probs read from the cache ({n_train + n_val} pairs, key "
                f"{key[:12]}): the reference pass is skipped",
                phase="reference",
                cache=str(path),
                cache_hit=True,
            )
        )
    else:
        start = time.perf_counter()
        train, how = compute(ctx, ctx.rows, pad_id, "reference:train")
        val, _ = compute(ctx, ctx.val_rows, pad_id, "reference:validation")
        seconds = time.perf_counter() - start
        where = ""
        if use_cache and ctx.info.is_main:
            try:
                write_cache(path, train, val, parts)
                where = f"; cached at {path}"
            except OSError as exc:  # a read-only home: train anyway, say so
                where = f"; not cached ({exc.strerror or exc})"
        ctx.report(
            events.message(
                f"reference log-probs computed once from the initial policy ({how}) for "
                f"{n_train + n_val} pairs in {seconds:.1f}s{where}",
                phase="reference",
                cache=str(path) if use_cache else None,
                cache_hit=False,
            )
        )
    for rows, values in ((ctx.rows, train), (ctx.val_rows, val)):
        for row, (c, r) in zip(rows, values.tolist(), strict=True):
            row.ref_chosen, row.ref_rejected = c, r
