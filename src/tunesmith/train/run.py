"""Set up a run and hand it to the loop: spec -> data -> model -> run directory -> loop -> final.

Order matters for the user: the data is validated with the tokenizer *before* the model is
loaded (fail loudly, early), the resolved spec is printed and written before the first step,
and `final/` is written only after the loop ends (from the best checkpoint with early stopping).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import ResolvedSpec, RunSpec, dump_spec, load_spec, write_spec
from tunesmith.errors import ConfigError, DataError, TrainingError
from tunesmith.train import distributed as dist
from tunesmith.train import run_dir as rd
from tunesmith.train.callbacks import (
    JsonlSink,
    LogSink,
    ProgressSink,
    Sink,
    Sinks,
    TensorBoardSink,
    read_metrics,
    truncate_metrics,
)


@dataclass
class RunResult:
    run_dir: Path
    final_dir: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    status: str = "completed"  # completed | early_stopped | cancelled
    spec: ResolvedSpec | None = None
    # The trained model, still in memory (peft-wrapped for adapters): evaluate it right away
    # without reloading. Not kept by the CLI.
    model: Any = field(default=None, repr=False)

    @property
    def losses(self) -> list[float]:
        return [m["loss"] for m in self.metrics if "loss" in m]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def train(
    spec: RunSpec | dict[str, Any] | str | Path,
    overrides: list[str] | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Train from a spec (YAML path, dict or RunSpec) plus `key=value` overrides."""
    return _run(load_spec(spec, overrides), None, progress=progress, log=log)


def resume(
    run_dir: str | Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Continue the run in `run_dir` from its latest complete checkpoint."""
    run_dir = Path(run_dir)
    config = run_dir / rd.CONFIG
    if not config.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no {rd.CONFIG})")
    manifest = run_dir / rd.MANIFEST
    status = rd.read_json(manifest).get("status") if manifest.is_file() else None
    if status in ("completed", "early_stopped") and (run_dir / rd.FINAL).is_dir():
        raise ConfigError(
            f"run {run_dir} already finished ({status}); its result is in {run_dir / rd.FINAL}",
            hint="start a new run to train further",
        )
    spec = load_spec(config, cls=ResolvedSpec)
    return _run(spec, run_dir, progress=progress, log=log)


# ---------------------------------------------------------------------------------------------


def _check_new_run_dir(path: Path) -> None:
    if (path / rd.MANIFEST).exists() or (path / rd.CHECKPOINTS).exists():
        raise ConfigError(
            f"output directory {path} already holds a run",
            hint=f"continue it with: tunesmith train --resume {path}, or pick another output_dir",
        )


def _prepare_data(spec: RunSpec, tokenizer: Any) -> Any:
    from tunesmith.data.prepare import prepare_sft

    if spec.data.train is None:
        raise ConfigError(
            "no training data given",
            where="data.train",
            hint="set data.train in the config or pass --data FILE",
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
    )


def _dtypes(spec: RunSpec, device: Any) -> tuple[str | None, Any]:
    """(dtype to load the model in, autocast dtype). CPU: float32, no autocast, unless the
    user asked. CUDA with bf16: adapters load the frozen base in bf16; full fine-tuning keeps
    float32 master weights; both compute under bf16 autocast."""
    import torch

    if spec.dtype not in ("auto", "", None):
        from tunesmith.models.load import pick_dtype

        chosen = pick_dtype(device, spec.dtype)
        return spec.dtype, (chosen if chosen != torch.float32 else None)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return ("float32" if spec.adapter == "none" else "bf16"), torch.bfloat16
    return "float32", None


def _optimizer(model: Any, spec: ResolvedSpec) -> Any:
    import torch

    decay, no_decay = [], []
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


def warmup_steps(spec: ResolvedSpec) -> int:
    return round(spec.warmup * spec.total_steps) if spec.warmup < 1 else int(spec.warmup)


def _sinks(run_dir: Path, main: bool, progress: bool, log: Callable[[str], None] | None) -> Sinks:
    if not main:
        return Sinks([])
    sinks: list[Sink] = [JsonlSink(run_dir / rd.METRICS), TensorBoardSink(run_dir / rd.TENSORBOARD)]
    if progress:
        sinks.append(ProgressSink())
    else:
        sinks.append(LogSink(log or _stderr))
    return Sinks(sinks)


def _run(
    spec: RunSpec,
    resume_dir: Path | None,
    *,
    progress: bool,
    log: Callable[[str], None] | None,
) -> RunResult:
    import torch

    from tunesmith.models.load import load_model, load_tokenizer, resolve_path
    from tunesmith.train import fast_lora
    from tunesmith.models.load import quantization_config
    from tunesmith.train.adapters import apply_adapter, count_parameters
    from tunesmith.train.attention import use_packed_attention
    from tunesmith.auto import resolve_spec
    from tunesmith.train.batching import make_rows
    from tunesmith.train.host_memory import keep_freed_memory
    from tunesmith.train.loop import LoopContext, train_loop
    from tunesmith.train.losses import SFTLoss

    say = log or _stderr
    info, device = dist.init(spec.device)
    lock: rd.RunLock | None = None
    try:
        if spec.method != "sft":
            raise ConfigError(f"method '{spec.method}' is not available", where="method")
        if spec.adapter == "qlora" and spec.distributed.strategy == "fsdp":
            raise ConfigError(
                "FSDP is for full fine-tuning; use ddp with qlora", where="distributed.strategy"
            )
        run_path = (
            Path(resume_dir)
            if resume_dir
            else Path(spec.output_dir or dist.broadcast_object(str(rd.default_run_dir(spec.model))))
        )
        if resume_dir is None:  # every rank checks: no rank may wait for one that failed
            _check_new_run_dir(run_path)
        dist.barrier()

        # Data first: validate with the tokenizer before paying for the model.
        base_path = resolve_path(spec.model)
        tokenizer = load_tokenizer(base_path)
        data = _prepare_data(spec, tokenizer)
        if not data.train:
            raise DataError(
                "no training examples left after validation", where=str(spec.data.train)
            )
        rows = make_rows(data.train, spec.data.max_seq_len, packing=spec.data.packing)
        val_rows = make_rows(data.validation, spec.data.max_seq_len, packing=spec.data.packing)
        if resume_dir is not None:
            _check_same_data(run_path, data)

        load_dtype, autocast_dtype = _dtypes(spec, device)
        quant = quantization_config(spec.adapter)
        extra = {"quantization_config": quant} if quant is not None else {}
        if quant is not None:
            if device.type == "cuda":
                extra["device_map"] = {"": device.index if device.index is not None else 0}
            else:
                extra["device_map"] = {"": "cpu"}
        loaded = load_model(base_path, device=str(device), dtype=load_dtype, **extra)
        cfg = loaded.model.config
        weight_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        if not isinstance(spec, ResolvedSpec):
            spec = resolve_spec(
                spec,
                n_examples=len(data.train),
                n_rows=len(rows),
                n_val_rows=len(val_rows),
                world_size=info.world_size,
                device_type=device.type,
                hidden=int(getattr(cfg, "hidden_size", 1024)),
                layers=int(getattr(cfg, "num_hidden_layers", 24)),
                weight_bytes=weight_bytes,
            )
            notes = dict(spec.auto_notes)
            notes["device"] = f"{device} ({spec.device})"
            notes["dtype"] = f"weights {load_dtype}, autocast {autocast_dtype or 'off'}"
            if info.enabled:
                notes["distributed"] = dist.resolve_strategy(spec.distributed.strategy, info)
            spec.auto_notes = notes
        elif spec.world_size != info.world_size:
            say(
                f"warning: run started on {spec.world_size} processes, resuming on "
                f"{info.world_size}; the data order per step changes"
            )

        if info.is_main:
            run_path.mkdir(parents=True, exist_ok=True)
            lock = rd.RunLock(run_path).acquire()
            if resume_dir is None:
                write_spec(spec, run_path / rd.CONFIG)
                rd.write_json(
                    run_path / rd.MANIFEST,
                    rd.build_manifest(
                        spec=spec,
                        base_model_path=base_path,
                        train_sha256=data.train_sha256,
                        validation_sha256=data.validation_sha256,
                        device=device,
                        world_size=info.world_size,
                        n_train=len(data.train),
                        n_validation=len(data.validation),
                    ),
                )
            else:
                rd.update_manifest(run_path, status="running", resumed=rd.now())
            (run_path / rd.CANCEL).unlink(missing_ok=True)
            say(("resuming run " if resume_dir else "run directory: ") + str(run_path))
            say("resolved config:\n" + dump_spec(spec).rstrip())
            say(
                f"data: {len(data.train)} train examples in {len(rows)} rows"
                f"{' (packed)' if spec.data.packing else ''}, {len(data.validation)} validation; "
                f"{spec.total_steps} optimizer steps"
            )
        dist.barrier()

        _seed_everything(spec.seed)  # adapter init: identical on every rank
        model = apply_adapter(loaded.model, spec)
        if not spec.compile and use_packed_attention(model) and info.is_main:
            say("attention: causal SDPA per packed example (no work across example borders)")
        if spec.fused_lora and not spec.compile:
            fused = fast_lora.install(model)
            if fused and info.is_main:
                say(f"LoRA: {fused} layers run as one fused autograd function each")
        if device.type == "cpu" and keep_freed_memory() and info.is_main:
            say("host memory: freed blocks kept for reuse (no page faults on every new tensor)")
        if info.is_main:
            say(str(count_parameters(model)))
        strategy = dist.resolve_strategy(spec.distributed.strategy, info)
        wrapped = dist.wrap(SFTLoss(model), strategy, info, device)
        if spec.compile:
            wrapped = torch.compile(wrapped)
        optimizer = _optimizer(model, spec)
        _seed_everything(spec.seed + 1 + info.rank)  # dropout: a different stream per rank
        warm = warmup_steps(spec)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: lr_factor(s, total=spec.total_steps, warmup=warm, kind=spec.scheduler),
        )
        ctx = LoopContext(
            spec=spec,
            model=model,
            wrapped=wrapped,
            optimizer=optimizer,
            scheduler=scheduler,
            rows=rows,
            val_rows=val_rows,
            info=info,
            device=device,
            run_dir=run_path,
            pad_id=int(tokenizer.pad_token_id),
            sinks=Sinks([]),
            autocast_dtype=autocast_dtype,
        )
        if resume_dir is not None:
            _resume_into(ctx, run_path, say)
        elif spec.early_stopping.enabled and not val_rows:
            raise ConfigError(
                "early stopping needs validation data",
                where="early_stopping.enabled",
                hint="set data.validation or data.validation_fraction",
            )
        ctx.sinks = _sinks(run_path, info.is_main, progress, log)
        try:
            status = train_loop(ctx)
        except TrainingError:
            if info.is_main:
                rd.update_manifest(run_path, status="failed", finished=rd.now())
            raise
        finally:
            ctx.sinks.close()

        final_dir = run_path / rd.FINAL
        if status != "cancelled":
            _finish(ctx, status, final_dir, tokenizer, say)
        elif info.is_main:
            rd.update_manifest(
                run_path, status="cancelled", finished=rd.now(), cancelled_at_step=ctx.state.step
            )
        dist.barrier()
        metrics = read_metrics(run_path / rd.METRICS)
        if status != "cancelled" and info.is_main:
            _compare_base(spec, run_path, bool(val_rows), say)
        return RunResult(run_path, final_dir, metrics, status, spec, model)
    finally:
        if lock is not None:
            lock.release()
        dist.shutdown()


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_same_data(run_path: Path, data: Any) -> None:
    manifest = rd.read_json(run_path / rd.MANIFEST)
    was = manifest.get("data", {}).get("train_sha256")
    if was and was != data.train_sha256:
        raise DataError(
            "the training data changed since this run started; resuming would "
            "not continue the same run",
            where=str(manifest["data"].get("train")),
        )


def _resume_into(ctx: Any, run_path: Path, say: Callable[[str], None]) -> None:
    from tunesmith.train import checkpoint as ckpt
    from tunesmith.train.loop import restore

    if ctx.info.is_main:
        for removed in ckpt.remove_incomplete(run_path):
            say(f"removed incomplete checkpoint {removed.name}")
    dist.barrier()
    latest = ckpt.latest_checkpoint(run_path)
    if latest is None:
        say("no complete checkpoint yet: starting this run from step 0")
        if ctx.info.is_main:
            truncate_metrics(run_path / rd.METRICS, 0)
        return
    restore(ctx, latest)
    if ctx.info.is_main:
        truncate_metrics(run_path / rd.METRICS, ctx.state.step)
        say(f"resumed from {latest} (step {ctx.state.step})")


def _finish(
    ctx: Any, status: str, final_dir: Path, tokenizer: Any, say: Callable[[str], None]
) -> None:
    """Restore the best weights (early stopping) and write final/ and the manifest."""
    from tunesmith.train import checkpoint as ckpt
    from tunesmith.train.adapters import save_final
    from tunesmith.train.attention import restore_stock_attention
    from tunesmith.train.loop import restore, state_module

    st, spec = ctx.state, ctx.spec
    if spec.early_stopping.enabled and st.best_step is not None and st.best_step != st.step:
        restore(ctx, ckpt.checkpoint_dir(ctx.run_dir, st.best_step), weights_only=True)
        if ctx.info.is_main:
            say(f"restored the best weights (step {st.best_step}, val_loss {st.best_val_loss:.4f})")
    restore_stock_attention(ctx.model)  # final/ and RunResult.model use stock attention
    state_dict = None
    if dist.is_fsdp(state_module(ctx)):
        full, _ = ckpt.gather_state(state_module(ctx), ctx.optimizer, full=True)
        state_dict = {k.removeprefix("model."): v for k, v in full.items()}
    if ctx.info.is_main:
        tmp = final_dir.with_name(".final-tmp")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        save_final(ctx.model, tokenizer, tmp, state_dict=state_dict)
        shutil.rmtree(final_dir, ignore_errors=True)
        tmp.rename(final_dir)
        rd.update_manifest(
            ctx.run_dir,
            status=status,
            finished=rd.now(),
            steps=st.step,
            trained_tokens=st.trained_tokens,
            best_step=st.best_step,
            best_val_loss=st.best_val_loss,
            final_dir=str(final_dir),
        )
        say(f"final {'adapter' if hasattr(ctx.model, 'peft_config') else 'model'}: {final_dir}")


def _compare_base(spec: Any, run_path: Path, has_val: bool, say: Callable[[str], None]) -> None:
    if not (has_val and spec.eval.compare_base):
        return
    try:
        from tunesmith.eval.compare import compare_run
    except ImportError:
        say("base-vs-tuned comparison skipped: tunesmith.eval.compare is not available")
        return
    say("comparing the tuned model with the base model on held-out data ...")
    try:
        compare_run(run_path)
    except Exception as exc:  # the trained model is safe on disk; report, do not lose the run
        say(f"warning: base-vs-tuned comparison failed: {exc}")
