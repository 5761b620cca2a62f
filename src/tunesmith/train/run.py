"""Drive one training run: set it up (setup.py), run the loop (loop.py), write final/.

`final/` is written only after the loop ends (from the best checkpoint with early stopping).
The run's status in the manifest always ends as completed, early_stopped, cancelled or failed
(with the reason): a run that stopped for any reason never reads `running` afterwards.
Everything the run says goes out as events: to the caller's `on_event`, and on rank 0 into
RUN_DIR/events.jsonl, metrics.jsonl and TensorBoard (reporting.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith import events
from tunesmith.config import ResolvedSpec, RunSpec, load_spec
from tunesmith.errors import ConfigError
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
) -> RunResult:
    """Train from a spec (YAML path, dict or RunSpec) plus `key=value` overrides."""
    return _run(load_spec(spec, overrides), None, events.reporter(on_event))


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


def _run(spec: RunSpec, resume_run: RunDir | None, on_event: Reporter) -> RunResult:
    from tunesmith.train.loop import train_loop
    from tunesmith.train.reporting import RunReporter
    from tunesmith.train.setup import prepare

    info, device = dist.init(spec.device)
    report = on_event if info.is_main else events.ignore
    prepared = None
    run_report: RunReporter | None = None
    try:
        prepared = prepare(spec, resume_run, info, device, report)
        ctx = prepared.ctx
        if info.is_main:
            run_report = RunReporter(ctx.run, on_event)
            ctx.report = run_report
        if resume_run is not None:
            _resume_into(ctx)
        status = train_loop(ctx)
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
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, KeyboardInterrupt):
                reason = "interrupted"
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


def _resume_into(ctx: Any) -> None:
    from tunesmith.train import checkpoint as ckpt
    from tunesmith.train.loop import restore

    if ctx.info.is_main:
        for removed in ckpt.remove_incomplete(ctx.run):
            ctx.report(events.message(f"removed incomplete checkpoint {removed.name}"))
    dist.barrier()
    latest = ctx.run.latest_checkpoint()
    if latest is None:
        ctx.report(events.message("no complete checkpoint yet: starting this run from step 0"))
        if ctx.info.is_main:
            ctx.run.truncate_metrics(0)
        return
    restore(ctx, latest)
    if ctx.info.is_main:
        ctx.run.truncate_metrics(ctx.state.step)
        ctx.report(events.message(f"resumed from {latest} (step {ctx.state.step})"))


def _finish(ctx: Any, status: str, tokenizer: Any) -> None:
    """Restore the best weights (early stopping) and write final/ and the manifest."""
    from tunesmith.io import atomic_dir
    from tunesmith.train import checkpoint as ckpt
    from tunesmith.train.adapters import save_final
    from tunesmith.train.attention import restore_stock_attention
    from tunesmith.train.loop import restore, state_module

    st, spec, run = ctx.state, ctx.spec, ctx.run
    if spec.early_stopping.enabled and st.best_step is not None and st.best_step != st.step:
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
        with atomic_dir(run.final, replace=True) as tmp:
            save_final(ctx.model, tokenizer, tmp, state_dict=state_dict)
        run.set_status(
            status,
            steps=st.step,
            trained_tokens=st.trained_tokens,
            best_step=st.best_step,
            best_val_loss=st.best_val_loss,
            final_dir=str(run.final),
        )
        kind = "adapter" if hasattr(ctx.model, "peft_config") else "model"
        ctx.report(events.message(f"final {kind}: {run.final}"))
