"""Drive one training run: set it up (setup.py), run the loop (loop.py), write final/.

`final/` is written only after the loop ends (from the best checkpoint with early stopping).
The run's status in the manifest always ends as completed, early_stopped, cancelled or failed
(with the reason): a run that stopped for any reason never reads `running` afterwards.
Everything the run says goes out as events: to the caller's `on_event`, and on rank 0 into
RUN_DIR/events.jsonl, metrics.jsonl and TensorBoard (reporting.py).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith import events
from tunesmith.config import ResolvedSpec, RunSpec, load_spec
from tunesmith.errors import ConfigError, TrainingError
from tunesmith.events import Event, Reporter
from tunesmith.runs import RunDir
from tunesmith.train import distributed as dist


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
    has_validation: bool = False
    is_main: bool = True  # rank 0 (or not distributed): the process that reports
    # The base-vs-tuned comparison that ended the run (api.train fills it in), if one ran.
    comparison: Any = field(default=None, repr=False)

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)

    @property
    def losses(self) -> list[float]:
        return [m["loss"] for m in self.metrics if "loss" in m]


def train(
    spec: RunSpec | dict[str, Any] | str | Path,
    overrides: list[str] | None = None,
    *,
    on_event: Reporter | None = None,
    force: bool = False,
) -> RunResult:
    """Train from a spec (YAML path, dict or RunSpec) plus `key=value` overrides. `force`: the
    output_dir may be a non-empty directory that is not a run (see setup.check_new_run_dir)."""
    return _run(load_spec(spec, overrides), None, events.reporter(on_event), force=force)


def resume(run_dir: str | Path, *, on_event: Reporter | None = None) -> RunResult:
    """Continue the run in `run_dir` from its latest complete checkpoint."""
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise ConfigError(f"{run.path} is not a run directory (no {run.config.name})")
    if run.finished():
        raise ConfigError(
            f"run {run.path} already finished ({run.status}); its result is in {run.final}",
            hint="start a new run to train further",
        )
    spec = load_spec(run.config, cls=ResolvedSpec)
    return _run(spec, run, events.reporter(on_event))


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the loop (setup, model load, writing final/): stop like Ctrl-C does, so
    the run is marked failed instead of dying with its manifest reading "running". (In the
    loop, SIGTERM is a cancel request: checkpoint, then stop; see loop.CancelWatch.)"""

    def __init__(self) -> None:
        super().__init__("terminated (SIGTERM)")


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _run(
    spec: RunSpec, resume_run: RunDir | None, on_event: Reporter, *, force: bool = False
) -> RunResult:
    with _sigterm_raises():
        return _run_inner(spec, resume_run, on_event, force)


def _run_inner(
    spec: RunSpec, resume_run: RunDir | None, on_event: Reporter, force: bool
) -> RunResult:
    import time

    from tunesmith.train.loop import train_loop
    from tunesmith.train.reporting import RunReporter
    from tunesmith.train.setup import failure_reason, prepare

    started = time.perf_counter()
    info, device = dist.init(spec.device)
    report = on_event if info.is_main else events.ignore
    prepared = None
    run_report: RunReporter | None = None
    try:
        prepared = prepare(spec, resume_run, info, device, report, force=force)
        ctx = prepared.ctx
        if info.is_main:
            run_report = RunReporter(ctx.run, on_event)
            ctx.report = run_report
        prepare_objective = getattr(ctx.objective, "prepare", None)
        if prepare_objective is not None:  # with the initial weights: before a resume restores
            prepare_objective(ctx)
        if resume_run is not None:
            _resume_into(ctx)
        ctx.setup_s = time.perf_counter() - started  # a time budget counts it
        status = train_loop(ctx)
        if info.is_main:
            _remember_speed(ctx)
        if status != "cancelled":
            _finish(ctx, status, prepared.tokenizer)
        elif info.is_main:
            ctx.run.set_status("cancelled", cancelled_at_step=ctx.state.step)
        ctx.report(Event("status", phase="train", step=ctx.state.step, data={"status": status}))
        dist.barrier()
        return RunResult(
            ctx.run.path,
            ctx.run.final,
            ctx.run.read_metrics(),
            status,
            ctx.spec,
            ctx.model,
            has_validation=bool(ctx.val_rows),
            is_main=info.is_main,
        )
    except BaseException as exc:
        if prepared is not None and info.is_main:
            reason = failure_reason(exc)
            prepared.ctx.run.set_status("failed", error=reason)
            prepared.ctx.report(
                Event("status", phase="train", level="error", message=f"run failed: {reason}",
                      data={"status": "failed", "error": reason})
            )  # fmt: skip
        raise
    finally:
        if run_report is not None:
            run_report.close()
        if prepared is not None and prepared.lock is not None:
            prepared.lock.release()
        dist.shutdown()


def _remember_speed(ctx: Any) -> None:
    """Keep what the steps measured for the next estimate of this model on this machine
    (models/speed.py; `tunesmith data validate` reads it). Sampling methods (reinforcement)
    are timed by their generation, not their rows: not kept."""
    from tunesmith.models import speed
    from tunesmith.train.adapters import count_parameters

    rate = ctx.meter.tokens_per_s()
    if rate is None or ctx.spec.method.type == "reinforcement" or ctx.info.world_size > 1:
        return
    counted = count_parameters(ctx.model)
    base = counted.total - (counted.trainable if ctx.spec.adapter != "none" else 0)
    if base <= 0:
        return
    key = speed.speed_key(base, ctx.spec.adapter, ctx.device.type, ctx.spec.dtype,
                          ctx.spec.data.max_seq_len)  # fmt: skip
    speed.record(key, tokens_per_s=rate, val_tokens_per_s=ctx.meter.val_tokens_per_s(),
                 steps=ctx.meter.steps + 1)  # fmt: skip


def _resume_into(ctx: Any) -> None:
    from tunesmith.train import checkpoint as ckpt
    from tunesmith.train.loop import restore

    if ctx.info.is_main:
        for removed in ckpt.remove_incomplete(ctx.run):
            ctx.report(events.message(f"removed incomplete checkpoint {removed.name}"))
    dist.barrier()
    found = ctx.run.complete_checkpoints()
    if not found:
        ctx.report(events.message("no complete checkpoint yet: starting this run from step 0"))
        if ctx.info.is_main:
            ctx.run.truncate_metrics(0)
        return
    # A checkpoint can be damaged after it was marked complete (a disk error, a bad copy):
    # fall back to the next older complete one, saying so; fail cleanly if none is usable.
    unusable: list[str] = []
    for _, path in reversed(found):
        try:
            restore(ctx, path)
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            unusable.append(f"{path.name}: {reason}")
            ctx.report(
                events.message(
                    f"checkpoint {path} is damaged and cannot be resumed from ({reason}); "
                    "trying the one before it",
                    level="warning",
                )
            )
            continue
        if ctx.info.is_main:
            ctx.run.truncate_metrics(ctx.state.step)
            older = f", the newest usable one ({len(unusable)} damaged skipped)" if unusable else ""
            ctx.report(events.message(f"resumed from {path} (step {ctx.state.step}){older}"))
        return
    raise TrainingError(
        f"no checkpoint of {ctx.run.path} can be resumed from: " + "; ".join(unusable),
        hint=f"to start this run over from step 0, delete {ctx.run.checkpoints}",
    )


def _finish(ctx: Any, status: str, tokenizer: Any) -> None:
    """Restore the best weights (early stopping) and write final/ and the manifest."""
    from tunesmith.io import atomic_dir
    from tunesmith.train import checkpoint as ckpt
    from tunesmith.train.adapters import save_final
    from tunesmith.train.attention import restore_stock_attention
    from tunesmith.train.loop import restore, state_module

    st, spec, run = ctx.state, ctx.spec, ctx.run
    if spec.early_stopping.enabled is True and st.best_step is not None and st.best_step != st.step:
        restore(ctx, run.checkpoint(st.best_step), weights_only=True)
        ctx.report(
            events.message(
                f"restored the best weights (step {st.best_step}, val_loss {st.best_val_loss:.4f})"
            )
        )
    restore_stock_attention(ctx.model)  # final/ and RunResult.model use stock attention
    state_dict = None
    if dist.is_fsdp(state_module(ctx)):
        full, _ = ckpt.gather_state(state_module(ctx), ctx.optimizer, full=True)
        state_dict = {k.removeprefix("model."): v for k, v in full.items()}
    if ctx.info.is_main:
        stacked = (run.manifest().get("base_adapter") or {}).get("path")
        with atomic_dir(run.final, replace=True) as tmp:
            save_final(ctx.model, tokenizer, tmp, state_dict=state_dict)
            if stacked:  # trained on top of an adapter: final/ holds both as one
                from tunesmith.models.stacking import read_base_adapter, write_stacked

                write_stacked(tmp, read_base_adapter(Path(stacked)))
        run.set_status(
            status,
            steps=st.step,
            trained_tokens=st.trained_tokens,
            best_step=st.best_step,
            best_val_loss=st.best_val_loss,
            final_dir=str(run.final),
            planned_steps=spec.total_steps,
            stop_reason=st.stop_reason,
        )
        kind = "adapter" if hasattr(ctx.model, "peft_config") else "model"
        ctx.report(events.message(f"final {kind}: {run.final}"))
