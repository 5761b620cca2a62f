"""Set a run up for the loop: spec -> data -> model -> run directory -> LoopContext.

Order matters for the user: the data is validated with the tokenizer *before* the model is
loaded (fail loudly, early), and the resolved spec is reported and written before the first
step. Only rank 0 writes to the run directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith import events
from tunesmith.auto import sample_rows
from tunesmith.config import ResolvedSpec, RunSpec, absolute_paths, dump_spec
from tunesmith.errors import ConfigError, DataError
from tunesmith.events import Reporter
from tunesmith.runs import RunDir, RunLock, build_manifest, default_run_dir, now
from tunesmith.train import distributed as dist


@dataclass
class Prepared:
    """What `prepare` hands the loop: the context, plus what run.py needs to finish."""

    ctx: Any  # LoopContext
    tokenizer: Any
    lock: RunLock | None


# What a directory may hold and still count as empty: leftovers of an attempt that stopped
# before it wrote anything (the lock file, a cancel request).
_NOT_CONTENT = {".lock", "CANCEL"}


def check_new_run_dir(run: RunDir, *, force: bool = False) -> None:
    """Refuse, before anything is loaded or written, an output_dir that must not become this
    run: a filesystem root or the home folder (never, even with `force`), a file, a directory
    that already holds a run (saying how its last attempt ended and how to go on), a non-empty
    directory that is not a run (unless `force`), or one this process cannot write."""
    path = run.path.expanduser()
    resolved = path.resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        what = "a filesystem root" if resolved == Path(resolved.anchor) else "your home folder"
        raise ConfigError(
            f"output_dir {path} is {what}; a run writes config.yaml, checkpoints/, final/ "
            "and more, so it needs a directory of its own",
            param="output_dir",
            hint="pick a new directory, e.g. runs/NAME",
        )
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output_dir {path} is a file, not a directory", param="output_dir")
    if run.holds_run():
        raise _holds_run_error(run)
    if path.is_dir() and not force:
        content = sorted(p.name for p in path.iterdir() if p.name not in _NOT_CONTENT)
        if content:
            more = f" and {len(content) - 3} more" if len(content) > 3 else ""
            shown = ", ".join(content[:3]) + more
            raise ConfigError(
                f"output_dir {path} is not empty and is not a tunesmith run (it holds "
                f"{shown}); a run would overwrite files in it",
                param="output_dir",
                hint="pick a new or empty directory, or pass --force (api: force=True) to "
                "write the run into it anyway",
            )
    check_writable(path)


def check_writable(path: Path) -> None:
    """A ConfigError when the run directory (or the folder it would be made in) cannot be
    written: found now, not after the model has loaded."""
    import os
    import tempfile

    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    reason = None if os.access(probe, os.W_OK | os.X_OK) else "Permission denied"
    if reason is None:  # access() says yes to root even on a read-only mount: try it
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".tunesmith-write-check-", dir=probe))
        except OSError as exc:
            reason = exc.strerror or str(exc)
    if reason is not None:
        where_ = "it" if probe == path else f"{probe}, where it would be created,"
        raise ConfigError(
            f"output_dir {path} cannot be written: {where_} is not writable ({reason})",
            param="output_dir",
            hint="pick a directory you can write, or fix its permissions",
        )


def _holds_run_error(run: RunDir) -> ConfigError:
    """'already holds a run', saying what became of its last attempt and how to go on."""
    manifest = run.manifest()
    status = manifest.get("status")
    resume = f"continue it with: tunesmith train --resume {run.path}"
    fresh = "or pick another output_dir (or delete this one) to start over"
    if status in ("completed", "early_stopped"):
        return ConfigError(
            f"output directory {run.path} already holds a finished run ({status})",
            param="output_dir",
            hint="pick another output_dir for a new run",
        )
    if status == "failed":
        error = str(manifest.get("error") or "no reason recorded")
        error = error if len(error) <= 200 else error[:197] + "..."
        return ConfigError(
            f"output directory {run.path} holds an earlier attempt that failed: {error}",
            param="output_dir",
            hint=f"fix the cause, then {resume}; {fresh}",
        )
    if status == "cancelled":
        step = manifest.get("cancelled_at_step")
        at = f" at step {step}" if step is not None else ""
        return ConfigError(
            f"output directory {run.path} holds a run that was cancelled{at}",
            param="output_dir",
            hint=f"{resume}; {fresh}",
        )
    if status == "running":
        return ConfigError(
            f"output directory {run.path} holds a run that reads 'running': it is still "
            "training in another process, or that process was killed",
            param="output_dir",
            hint=f"if it was killed, {resume}; {fresh}",
        )
    return ConfigError(
        f"output directory {run.path} already holds a run",
        param="output_dir",
        hint=f"{resume}; {fresh}",
    )


def failure_reason(exc: BaseException) -> str:
    """What a failed run's manifest says about why it stopped."""
    if isinstance(exc, KeyboardInterrupt):
        return str(exc) or "interrupted"
    return str(exc) or type(exc).__name__


def prepare_data(spec: RunSpec, tokenizer: Any) -> Any:
    from tunesmith.data.prepare import prepare_preference, prepare_prompts, prepare_sft
    from tunesmith.train.objectives import PREFERENCE_METHODS

    if spec.data.train is None:
        raise ConfigError(
            "no training data given",
            where="data.train",
            param="data.train",
            hint="set data.train in the config or pass --data FILE",
        )
    if spec.method.type == "reinforcement":  # prompts: never packed or mixed
        if spec.data.mix:
            raise ConfigError(
                "data.mix adds conversations, which reinforcement fine-tuning cannot train on",
                where="data.mix",
                param="data.mix",
            )
        return prepare_prompts(
            Path(spec.data.train),
            tokenizer,
            validation=spec.data.validation,
            validation_fraction=spec.data.validation_fraction,
            max_seq_len=spec.data.max_seq_len,
            seed=spec.seed,
            format=spec.data.format,
            dedupe=spec.data.dedupe,
        )
    if spec.method.type in PREFERENCE_METHODS:  # pairs: never packed or mixed
        if spec.data.mix:
            raise ConfigError(
                f"data.mix adds conversations, which method {spec.method.type} cannot train on",
                where="data.mix",
                param="data.mix",
            )
        return prepare_preference(
            Path(spec.data.train),
            tokenizer,
            method=spec.method.type,
            validation=spec.data.validation,
            validation_fraction=spec.data.validation_fraction,
            max_seq_len=spec.data.max_seq_len,
            truncate=spec.data.truncate,
            seed=spec.seed,
            format=spec.data.format,
            dedupe=spec.data.dedupe,
        )
    return prepare_sft(
        Path(spec.data.train),
        tokenizer,
        validation=spec.data.validation,
        validation_fraction=spec.data.validation_fraction,
        max_seq_len=spec.data.max_seq_len,
        truncate=spec.data.truncate,
        train_on=spec.data.train_on,
        seed=spec.seed,
        mix=list(spec.data.mix) or None,
        format=spec.data.format,
        dedupe=spec.data.dedupe,
    )


def duplicate_notes(report: Any) -> list[str]:
    """What training says about repeated rows: kept ones (trained on more than once) or, with
    data.dedupe, the ones dropped, naming their lines."""
    out = []
    for code, text in (
        ("duplicate", "exact duplicate rows kept (trained on more than once; data.dedupe: "
         "true drops them)"),
        ("deduplicated", "exact duplicate rows dropped (data.dedupe)"),
    ):  # fmt: skip
        found = [w for w in report.warnings if w.code == code]
        if found:
            lines = ", ".join(w.where for w in found[:10]) + (", ..." if len(found) > 10 else "")
            out.append(f"{len(found)} {text}: {lines}")
    return out


def dtypes(spec: RunSpec, device: Any) -> tuple[str | None, Any]:
    """(dtype to load the model in, autocast dtype). CPU: float32, no autocast, unless the
    user asked. CUDA with bf16: adapters load the frozen base in bf16; full fine-tuning keeps
    float32 master weights; both compute under bf16 autocast."""
    import torch

    if spec.dtype not in ("auto", "", None):
        from tunesmith.models.load import pick_dtype

        chosen = pick_dtype(device, spec.dtype)
        if device.type == "cpu" and chosen == torch.bfloat16 and _bf16_base_path(spec):
            return "float32", None  # float32 weights, bf16 base products (models/precision.py)
        return spec.dtype, (chosen if chosen != torch.float32 else None)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return ("float32" if spec.adapter == "none" else "bf16"), torch.bfloat16
    return "float32", None


def _bf16_base_path(spec: RunSpec) -> bool:
    """Whether a CPU run can take the bf16 frozen-base path (plain LoRA, fused)."""
    return spec.adapter == "lora" and spec.fused_lora and not spec.compile


def make_optimizer(model: Any, spec: ResolvedSpec) -> Any:
    import torch

    decay: list[Any] = []
    no_decay: list[Any] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (
            no_decay if p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias") else decay
        ).append(p)
    groups = [
        {"params": decay, "weight_decay": spec.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    kwargs: dict[str, Any] = {"lr": spec.learning_rate, "betas": (0.9, 0.999), "eps": 1e-8}
    if next(iter(model.parameters())).device.type == "cuda":
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, **kwargs)


def lr_factor(step: int, *, total: int, warmup: int, kind: str) -> float:
    """LR multiplier before optimizer step `step` (0-based): linear warmup, then the schedule."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(1.0, max(0.0, progress))
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Schedule:
    """The learning-rate schedule as LambdaLR's function. A callable object, not a lambda, so
    LambdaLR checkpoints its fields: `total` is the planned steps, or fewer once a time budget
    cut them (loop.py), and a resumed run continues the schedule it had."""

    total: int
    warmup: int
    kind: str

    def __call__(self, step: int) -> float:
        return lr_factor(step, total=self.total, warmup=self.warmup, kind=self.kind)


def warmup_steps(spec: ResolvedSpec) -> int:
    return round(spec.warmup * spec.total_steps) if spec.warmup < 1 else int(spec.warmup)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_same_data(run: RunDir, data: Any) -> None:
    manifest = run.manifest()
    was = manifest.get("data", {}).get("train_sha256")
    if was and was != data.train_sha256:
        raise DataError(
            "the training data changed since this run started; resuming would "
            "not continue the same run",
            where=str(manifest["data"].get("train")),
        )


def check_same_base_adapter(run: RunDir, stack: Any) -> None:
    """A resumed run on top of an adapter must find that adapter as it was."""
    was = (run.manifest().get("base_adapter") or {}).get("sha256")
    now_sha = stack.sha256 if stack is not None else None
    if was != now_sha:
        raise ConfigError(
            "the adapter this run trains on top of changed (or appeared) since it started; "
            "resuming would not continue the same run",
            where=str(stack.path) if stack is not None else None,
            param="model",
        )


def _load_base(spec: RunSpec, base_path: Path, device: Any) -> tuple[Any, Any]:
    from tunesmith.models.load import load_model, quantization_config

    load_dtype, autocast_dtype = dtypes(spec, device)
    quant = quantization_config(spec.adapter)
    extra: dict[str, Any] = {"quantization_config": quant} if quant is not None else {}
    if quant is not None:
        index = device.index if device.index is not None else 0
        extra["device_map"] = {"": index if device.type == "cuda" else "cpu"}
    loaded = load_model(base_path, device=str(device), dtype=load_dtype, **extra)
    return loaded, (load_dtype, autocast_dtype)


def _resolve(spec: RunSpec, data: Any, rows: list, val_rows: list, cfg: Any, weight_bytes: int,
             info: dist.DistInfo, device: Any, dts: tuple[Any, Any],
             n_params: int | None = None) -> ResolvedSpec:  # fmt: skip
    from tunesmith.auto import resolve_spec

    resolved = resolve_spec(
        spec,
        n_examples=len(data.train),
        n_rows=len(rows),
        n_val_rows=len(val_rows),
        world_size=info.world_size,
        device_type=device.type,
        hidden=int(getattr(cfg, "hidden_size", 1024)),
        layers=int(getattr(cfg, "num_hidden_layers", 24)),
        weight_bytes=weight_bytes,
        row_tokens=sum(len(r) for r in rows),
        val_row_tokens=sum(len(r) for r in val_rows),
        n_params=n_params,
    )
    notes = dict(resolved.auto_notes)
    notes["device"] = f"{device} ({resolved.device})"
    notes["dtype"] = f"weights {dts[0]}, autocast {dts[1] or 'off'}"
    if info.enabled:
        notes["distributed"] = dist.resolve_strategy(resolved.distributed.strategy, info)
    made_absolute = absolute_paths(resolved)
    if made_absolute:
        notes["paths"] = (
            f"{', '.join(made_absolute)} stored as absolute paths (from {Path.cwd()}), so "
            "--resume and compare work from any directory"
        )
    resolved.auto_notes = notes
    return resolved


def prepare(
    spec: RunSpec,
    resume: RunDir | None,
    info: dist.DistInfo,
    device: Any,
    report: Reporter,
    *,
    force: bool = False,
) -> Prepared:
    """Everything up to the first step. `report` receives setup messages (rank 0's only).
    `force`: a new run may go into a non-empty directory that is not a run."""
    import torch

    from tunesmith.models import precision, stacking
    from tunesmith.models.load import load_tokenizer, resolve_path
    from tunesmith.models.registry import resolve
    from tunesmith.train import fast_lora
    from tunesmith.train.adapters import apply_adapter, count_parameters
    from tunesmith.train.attention import use_packed_attention
    from tunesmith.train.host_memory import keep_freed_memory
    from tunesmith.train.loop import LoopContext
    from tunesmith.train.objectives import check_method, check_options, make_objective
    from tunesmith.train.objectives import make_rows as objective_rows

    def say(text: str, level: events.Level = "info") -> None:
        if info.is_main:
            report(events.message(text, phase="setup", level=level))

    check_method(spec.method.type)
    check_options(spec)  # a bad grader fails before any data or model is read
    if spec.adapter == "qlora" and spec.distributed.strategy == "fsdp":
        raise ConfigError(
            "FSDP is for full fine-tuning; use ddp with qlora",
            where="distributed.strategy",
            param="distributed.strategy",
        )
    if resume is not None:
        run = resume
    elif spec.output_dir:
        run = RunDir(spec.output_dir)
    else:
        run = RunDir(dist.broadcast_object(str(default_run_dir(spec.model).path)))
    if resume is None:  # every rank checks: no rank may wait for one that failed
        check_new_run_dir(run, force=force)
    else:
        check_writable(run.path)
    dist.barrier()

    # Data first: validate with the tokenizer before paying for the model.
    base_path = resolve_path(spec.model)
    # `--model RUN_DIR` of an adapter run: train on top of that adapter (models/stacking.py)
    carried = resolve(spec.model).adapter
    stack = stacking.read_base_adapter(carried) if carried is not None else None
    if stack is not None:
        stacking.check_stackable(stack, spec.adapter)
    tokenizer = load_tokenizer(base_path)
    data = prepare_data(spec, tokenizer)
    for note in duplicate_notes(data.report):
        say(note, level="warning")
    if not data.train:
        raise DataError("no training examples left after validation", where=str(spec.data.train))
    method = spec.method.type
    if method == "reinforcement":  # the grader's {{item.x}} against a real row
        check_options(spec, data.train[0].item)
    rows = objective_rows(method, data.train, spec.data.max_seq_len, packing=spec.data.packing)
    val_rows = objective_rows(
        method, data.validation, spec.data.max_seq_len, packing=spec.data.packing
    )
    if resume is not None:
        check_same_data(run, data)
        check_same_base_adapter(run, stack)
    if spec.early_stopping.enabled is True and not val_rows:
        raise ConfigError(
            "early stopping needs validation data",
            where="early_stopping.enabled",
            param="early_stopping.enabled",
            hint="set data.validation or data.validation_fraction",
        )

    loaded, dts = _load_base(spec, base_path, device)
    if stack is not None:
        loaded.model = stacking.fold(loaded.model, stack)
        say(
            f"training on top of the adapter {stack.path}: merged into the frozen weights in "
            "memory (its files stay as they are); a new adapter trains on top"
        )
    if not isinstance(spec, ResolvedSpec):
        params = list(loaded.model.parameters())
        weight_bytes = sum(p.numel() * p.element_size() for p in params)
        n_params = count_parameters(loaded.model).total  # 4-bit weights at their real count
        spec = _resolve(spec, data, rows, val_rows, loaded.model.config, weight_bytes, info,
                        device, dts, n_params)  # fmt: skip
    elif spec.world_size != info.world_size:
        say(
            f"run started on {spec.world_size} processes, resuming on {info.world_size}; "
            "the data order per step changes",
            level="warning",
        )

    cap = spec.eval.max_tokens
    val_sample = sample_rows(val_rows, cap if isinstance(cap, int) else None, spec.seed)

    lock: RunLock | None = None
    if info.is_main:
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # checked above; the filesystem may still say no
            raise ConfigError(
                f"cannot create the run directory {run.path}: {exc.strerror or exc}",
                param="output_dir",
            ) from None
        lock = run.lock().acquire()
    # From here on the run directory exists and is ours: any failure marks it failed.
    try:
        if info.is_main:
            if resume is None:
                run.write_config(dump_spec(spec))
                run.write_manifest(
                    build_manifest(
                        spec=spec,
                        base_model_path=base_path,
                        train_sha256=data.train_sha256,
                        validation_sha256=data.validation_sha256,
                        device=device,
                        world_size=info.world_size,
                        n_train=len(data.train),
                        n_validation=len(data.validation),
                    )
                )
                if stack is not None:
                    run.update_manifest(base_adapter=stack.to_manifest())
            else:
                run.update_manifest(status="running", resumed=now(), finished=None)
            run.clear_cancel()
            say(("resuming run " if resume else "run directory: ") + str(run.path))
            say("resolved config:\n" + dump_spec(spec).rstrip())
            packed = " (packed)" if spec.data.packing and method == "supervised" else ""
            if len(val_sample) < len(val_rows):
                say(
                    f"validation during training: a seeded sample of {len(val_sample)} of "
                    f"{len(val_rows)} held-out rows ({sum(len(r) for r in val_sample)} tokens; "
                    "eval.max_tokens); the comparison at the end scores all of them"
                )
            say(
                f"data: {len(data.train)} train examples in {len(rows)} rows"
                f"{packed}, {len(data.validation)} validation; "
                f"{spec.total_steps} optimizer steps"
            )
        dist.barrier()

        seed_everything(spec.seed)  # adapter init: identical on every rank
        model = apply_adapter(loaded.model, spec)
        if not spec.compile and use_packed_attention(model):
            say("attention: causal SDPA per packed example (no work across example borders)")
        base = precision.choose(
            spec.dtype, device, adapter=spec.adapter, fused=_bf16_base_path(spec),
            hidden=int(getattr(loaded.model.config, "hidden_size", 0) or 0), method=method,
        )  # fmt: skip
        base = dist.broadcast_object(base)  # one precision for all ranks: rank 0's measurement
        base_dtype = torch.bfloat16 if base.bf16 else None
        if spec.fused_lora and not spec.compile and (fused := fast_lora.install(model, base_dtype)):
            say(f"LoRA: {fused} layers run as one fused autograd function each")
            if fast_lora.install_head(model, base_dtype):
                say("LM head: bf16 products on the trained positions, float32 logits and loss")
        elif spec.adapter in ("dora", "qlora"):
            say(f"{spec.adapter}: peft's own layers (the fused LoRA path is for plain LoRA)")
        if device.type == "cpu":  # the choice and what it measured: said and kept
            say(base.describe())
            if info.is_main:
                run.update_manifest(precision=base.to_manifest())
        # GRPO's shapes change every step (sampled lengths, skipped groups): kept blocks would
        # fragment instead of being reused, and the resident set grew ~45 % in the bench
        if device.type == "cpu" and method != "reinforcement" and keep_freed_memory():
            say("host memory: freed blocks kept for reuse (no page faults on every new tensor)")
        say(str(count_parameters(model)))
        objective = make_objective(spec, pad_id=int(tokenizer.pad_token_id), tokenizer=tokenizer)
        strategy = dist.resolve_strategy(spec.distributed.strategy, info)
        wrapped = dist.wrap(objective.loss_module(model), strategy, info, device)
        if spec.compile:
            wrapped = torch.compile(wrapped)
        optimizer = make_optimizer(model, spec)
        seed_everything(spec.seed + 1 + info.rank)  # dropout: a different stream per rank
        schedule = Schedule(spec.total_steps, warmup_steps(spec), spec.scheduler)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        ctx = LoopContext(
            spec=spec,
            model=model,
            objective=objective,
            wrapped=wrapped,
            optimizer=optimizer,
            scheduler=scheduler,
            rows=rows,
            val_rows=val_sample,
            info=info,
            device=device,
            run=run,
            autocast_dtype=dts[1],
        )
    except BaseException as exc:  # the run directory exists now: it must not read "running"
        if info.is_main:
            run.set_status("failed", error=failure_reason(exc))
        if lock is not None:
            lock.release()
        raise
    return Prepared(ctx, tokenizer, lock)
