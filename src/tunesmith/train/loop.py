"""The training loop: one function, top to bottom, no framework.

Read `train_loop` to know exactly what a step does:
  1. take this step's micro-batches (deterministic from seed, epoch and position),
  2. count the objective's units (trained tokens for SFT) of the WHOLE optimizer step (all
     micro-batches, all ranks),
  3. forward/backward each micro-batch with loss = sum of unit losses / that count
     (so a step's gradient is the mean over units, however the rows were split),
  4. stop with an error naming the step if the loss or gradient norm is not finite, or the run
     diverged, collapsed or stopped learning (guards.py: from numbers already on the host),
  5. clip, optimizer step, LR schedule,
  6. validate / log / checkpoint / early-stop / honour a cancel request, on their cadence.
What is trained on (SFT, DPO, GRPO) is the objective's business (train/objectives/): the loop
never knows which one runs. Everything it reports goes out as events (tunesmith.events).
Building the model, data and run directory lives in `setup.py`; `run.py` drives a run.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith import events
from tunesmith.auto import PLATEAU_DELTA, fmt_duration
from tunesmith.errors import TrainingError
from tunesmith.events import Event, Reporter
from tunesmith.runs import RunDir
from tunesmith.train import checkpoint as ckpt
from tunesmith.train import distributed as dist
from tunesmith.train.batching import epoch_order, step_micro_batches, steps_per_epoch
from tunesmith.train.guards import DivergenceGuard, uniform_loss
from tunesmith.train.objectives import Objective


@dataclass
class LoopState:
    """Counters saved in every checkpoint; with the RNG states they define the data position."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    trained_tokens: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    elapsed_s: float = 0.0
    start_loss: float | None = None  # the first step's loss: what "diverged" is measured from
    total_steps: int = 0  # the steps this run takes, when a time budget cut them (0: the spec's)
    setup_s: float = 0.0  # time before the first step (all sessions): a budget counts it
    stop_reason: str | None = None  # why the run ended before its planned steps, in words


@dataclass
class Throughput:
    """What this session's steps and validations measured (step 1 left out: warm-up), for the
    next time estimate (models/speed.py): row tokens per second of steps, held-out tokens per
    second of validation."""

    step_s: float = 0.0
    step_tokens: int = 0
    steps: int = 0
    val_s: float = 0.0
    val_tokens: int = 0

    def tokens_per_s(self) -> float | None:
        return self.step_tokens / self.step_s if self.steps >= 2 and self.step_s > 0 else None

    def val_tokens_per_s(self) -> float | None:
        return self.val_tokens / self.val_s if self.val_s > 0 else None


@dataclass
class LoopContext:
    spec: Any  # ResolvedSpec
    model: Any  # the (peft-)model being trained
    objective: Objective
    wrapped: Any  # the objective's loss module, possibly inside DDP/FSDP
    optimizer: torch.optim.Optimizer
    scheduler: Any
    rows: list[Any]
    val_rows: list[Any]
    info: dist.DistInfo
    device: torch.device
    run: RunDir
    report: Reporter = events.ignore  # rank 0 only; other ranks report nothing
    autocast_dtype: torch.dtype | None = None
    state: LoopState = field(default_factory=LoopState)
    status: str = "running"
    setup_s: float = 0.0  # this session's setup time (run.py measures it)
    meter: Throughput = field(default_factory=lambda: Throughput())


# ---------------------------------------------------------------------------------------------
# Cancel: SIGINT / SIGTERM / a cancel request in the run dir -> save a checkpoint, stop cleanly
# ---------------------------------------------------------------------------------------------


class CancelWatch:
    def __init__(self, run: RunDir):
        self.run = run
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.requested = True

    def __enter__(self) -> CancelWatch:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def poll(self) -> bool:
        return self.requested or self.run.cancel_requested()


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _autocast(ctx: LoopContext) -> contextlib.AbstractContextManager:
    if ctx.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=ctx.device.type, dtype=ctx.autocast_dtype)


def _no_sync(ctx: LoopContext, last: bool) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if last else dist.no_sync(ctx.wrapped)


def accumulate(ctx: LoopContext, batches: list[dict[str, Any]], units: int) -> dict[str, Any]:
    """Step (3): forward/backward every micro-batch; each gradient is scaled so the step's
    gradient is the mean over its `units` (all micro-batches, all ranks). Returns the summed
    loss (float64) and the objective's summed statistics of this rank."""
    world = ctx.info.world_size
    scale = world / max(1, units)  # DDP averages gradients over ranks: undo that
    loss_sum = torch.zeros((), dtype=torch.float64)
    stats: dict[str, float] = {}
    for i, batch in enumerate(batches):
        with _no_sync(ctx, i == len(batches) - 1), _autocast(ctx):
            out = ctx.wrapped(**batch)
        part = out["loss"]
        (part * scale).backward()
        loss_sum += part.detach().double().cpu()
        for key, value in out.items():
            if key not in ("loss", "count"):
                stats[key] = stats.get(key, 0.0) + float(value)
    return {"loss_sum": loss_sum, "stats": stats}


def train_loop(ctx: LoopContext) -> str:
    """Run until total_steps, early stop or cancel. Returns the final status."""
    spec, st, obj = ctx.spec, ctx.state, ctx.objective
    st.setup_s += ctx.setup_s
    ctx.setup_s = 0.0
    total = st.total_steps or spec.total_steps
    budget = TimeBudget(ctx) if spec.time_budget else None
    world = ctx.info.world_size
    per_epoch = steps_per_epoch(len(ctx.rows), spec.batch_size * spec.grad_accum * world)
    params = [p for p in ctx.model.parameters() if p.requires_grad]
    # GRPO: a step whose every group scored alike has an exactly zero gradient, legitimately
    guard = DivergenceGuard(
        uniform_loss(ctx.model, obj.unit), zero_grad_stops=obj.unit != "completions"
    )
    order_epoch, order = -1, []
    ctx.report(
        Event(
            "status",
            phase="train",
            step=st.step,
            total=total,
            data={"status": "running", "start_step": st.step, "unit": obj.unit},
        )
    )
    # tokens/s counts training time only (not validation or checkpoint writes)
    window_tokens, window_time = 0, 0.0
    run_start = time.perf_counter() - st.elapsed_s

    with CancelWatch(ctx.run) as cancel:
        while st.step < total:
            if budget is not None:
                total = budget.fit(total)
                if st.step >= total:
                    break
            step_start = time.perf_counter()
            if st.step_in_epoch >= per_epoch:
                st.epoch += 1
                st.step_in_epoch = 0
            if order_epoch != st.epoch:
                order, order_epoch = epoch_order(len(ctx.rows), spec.seed, st.epoch), st.epoch
            # (1) this step's micro-batches (an objective with a rollout fills them in now)
            micro = step_micro_batches(
                ctx.rows,
                order,
                st.step_in_epoch,
                batch_size=spec.batch_size,
                grad_accum=spec.grad_accum,
                world_size=world,
                rank=ctx.info.rank,
                blank=obj.blank,
            )
            micro = obj.rollout(ctx, micro)
            batches = [obj.collate(m, ctx.device) for m in micro]
            # (2) the objective's units of the whole optimizer step, over every rank
            local_units = sum(obj.count(b) for b in batches)
            n_step = int(dist.all_reduce_sum(torch.tensor([float(local_units)]))[0].item())

            # (3) forward / backward per micro-batch
            acc = accumulate(ctx, batches, n_step)
            stat_keys = sorted(acc["stats"])

            # (4) one all-reduce for loss, cancel flag and statistics; non-finite stops the run
            flags = torch.tensor(
                [acc["loss_sum"].item(), float(cancel.poll())]
                + [acc["stats"][k] for k in stat_keys],
                dtype=torch.float64,
            )
            flags = dist.all_reduce_sum(flags)
            loss = flags[0].item() / max(1, n_step)
            step_no = st.step + 1
            if not math.isfinite(loss):
                raise TrainingError(
                    f"loss is {loss} at step {step_no} (epoch {st.epoch + 1}); training stopped",
                    hint="lower learning_rate (or lr_multiplier) or check the data",
                )
            # (5) clip, step, schedule
            grad_norm = dist.clip_grad_norm(params, spec.max_grad_norm)
            if not math.isfinite(grad_norm):
                raise TrainingError(
                    f"gradient norm is {grad_norm} at step {step_no} (epoch {st.epoch + 1}); "
                    "training stopped",
                    hint="lower learning_rate (or lr_multiplier), or set max_grad_norm",
                )
            guard.check(st, step_no, loss, grad_norm)
            lr = ctx.optimizer.param_groups[0]["lr"]
            ctx.optimizer.step()
            ctx.scheduler.step()
            ctx.optimizer.zero_grad(set_to_none=True)
            st.step, st.step_in_epoch = step_no, st.step_in_epoch + 1
            st.trained_tokens += n_step
            window_tokens += n_step
            step_s = time.perf_counter() - step_start
            window_time += step_s
            if budget is not None:
                budget.step_done(step_s)
            if step_no > 1:
                ctx.meter.steps += 1
                ctx.meter.step_s += step_s
                ctx.meter.step_tokens += sum(_size(r) for m in micro for r in m)

            # (6) validate, log, checkpoint, early stop, cancel
            record: dict[str, Any] = {
                "step": st.step,
                "epoch": round(st.epoch + st.step_in_epoch / per_epoch, 4),
                "loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "trained_tokens": st.trained_tokens,
            }
            sums = {k: flags[2 + i].item() for i, k in enumerate(stat_keys)}
            record.update(obj.step_metrics(sums, n_step))
            stop_early = False
            is_eval = bool(spec.eval_every_steps) and (
                st.step % spec.eval_every_steps == 0 or st.step == total
            )
            if is_eval and ctx.val_rows:
                eval_start = time.perf_counter()
                record.update(evaluate(ctx))
                eval_s = time.perf_counter() - eval_start
                if budget is not None:
                    budget.eval_done(eval_s)
                ctx.meter.val_s += eval_s
                ctx.meter.val_tokens += sum(_size(r) for r in ctx.val_rows)
                stop_early = _early_stopping(ctx, record["val_loss"])
            if is_eval or st.step % spec.log_every_steps == 0 or st.step == total:
                record["tokens_per_s"] = window_tokens / max(1e-9, window_time)
                record["elapsed_s"] = round(time.perf_counter() - run_start, 3)
                window_tokens, window_time = 0, 0.0
                ctx.report(Event("metrics", phase="train", step=st.step, total=total, data=record))
            st.elapsed_s = time.perf_counter() - run_start
            cancelled = flags[1].item() > 0
            if is_eval and ctx.val_rows and not cancelled:
                # validation can take long: a cancel asked for meanwhile stops the run now,
                # before the next step starts (every rank validated, so every rank asks)
                cancelled = _cancel_agreed(cancel)
            if st.step % spec.save_every_steps == 0 or cancelled:
                save(ctx)
            if cancelled:
                ctx.report(events.message(f"cancelled at step {st.step}; checkpoint saved"))
                return "cancelled"
            if stop_early:
                es = spec.early_stopping
                by = f"{es.min_delta:g}" if es.min_delta != "auto" else f"{PLATEAU_DELTA:.0%}"
                st.stop_reason = (
                    f"validation loss stopped improving: not better by more than {by} in "
                    f"{es.patience} evaluations (best {st.best_val_loss:.4f} at step "
                    f"{st.best_step})"
                )
                ctx.report(
                    events.message(f"early stopping at step {st.step} of {total}: {st.stop_reason}")
                )
                return "early_stopped"
    if budget is not None and st.step < spec.total_steps:
        st.stop_reason = budget.reason(st.step)
        ctx.report(events.message(f"time budget: stopped at step {st.step}: {st.stop_reason}"))
    return "completed"


class TimeBudget:
    """Fits the run's steps to `time_budget` from what the steps measure (the first steps are
    the probe): steps that fit = time left / (step time + validation time per step), planned
    before every step from the mean step time (step 1, the warm-up, left out once there are
    more). The schedule follows the new length when it moves by more than 5 %; a step that
    would end past the budget is not started. Counts setup and all earlier sessions."""

    def __init__(self, ctx: LoopContext):
        self.ctx = ctx
        self.budget_s = float(ctx.spec.time_budget)
        self.step_times: list[float] = []
        self.eval_s = 0.0
        self.planned = ctx.spec.total_steps
        self.first_cut = ""

    def step_done(self, seconds: float) -> None:
        self.step_times.append(seconds)

    def eval_done(self, seconds: float) -> None:
        self.eval_s = seconds

    def used(self) -> float:
        st = self.ctx.state
        return st.setup_s + st.elapsed_s

    def step_s(self) -> float:
        times = self.step_times[1:] or self.step_times  # step 1 includes warm-up
        return sum(times) / len(times)

    def fit(self, total: int) -> int:
        """The steps to take from here; called before every step (collective: rank 0's
        numbers decide)."""
        from tunesmith.auto import fit_steps_to_budget
        from tunesmith.train.batching import steps_per_epoch

        ctx, st = self.ctx, self.ctx.state
        if not self.step_times:
            return total
        spec, world = ctx.spec, ctx.info.world_size
        step_s = self.step_s()
        per_epoch = steps_per_epoch(len(ctx.rows), spec.batch_size * spec.grad_accum * world)
        planned = fit_steps_to_budget(
            planned_steps=self.planned,
            steps_per_epoch=per_epoch,
            budget_s=self.budget_s,
            elapsed_s=self.used(),
            done_steps=st.step,
            step_s=step_s,
            eval_s=self.eval_s,
            eval_every=spec.eval_every_steps if ctx.val_rows else None,
        )
        over = self.used() + step_s > self.budget_s
        decided = dist.broadcast_object((planned.steps, planned.message, over))
        new, message, over = int(decided[0]), str(decided[1]), bool(decided[2])
        if over:  # the next step would end past the budget
            new = st.step
        if new != total and (over or abs(new - total) > max(1, 0.05 * total)):
            self._retotal(new)
            total = new
            if new < self.planned and not self.first_cut:
                self.first_cut = message
                ctx.report(events.message(f"time budget: {message}"))
        return total

    def _retotal(self, total: int) -> None:
        self.ctx.state.total_steps = total
        for fn in getattr(self.ctx.scheduler, "lr_lambdas", []):
            if hasattr(fn, "total"):
                fn.total = total

    def reason(self, step: int) -> str:
        """What the budget cut, once the run has ended (also kept in the manifest)."""
        text = (
            f"{self.first_cut or 'the time budget ran out'}; {step} of {self.planned} planned "
            f"steps in {fmt_duration(self.used())} (budget {fmt_duration(self.budget_s)})"
        )
        if self.ctx.info.is_main:
            self.ctx.run.update_manifest(
                time_budget={
                    "budget_s": self.budget_s,
                    "planned_steps": self.planned,
                    "steps": step,
                    "message": self.first_cut,
                    "used_s": round(self.used(), 1),
                }
            )
        return text


def _size(row: Any) -> int:
    """Tokens of a row for the speed meter (rows without a length, GRPO's completions: 0)."""
    return len(row) if hasattr(row, "__len__") else 0


def _cancel_agreed(cancel: CancelWatch) -> bool:
    """Whether any rank has a cancel request now (collective: every rank calls it)."""
    flag = torch.tensor([float(cancel.poll())], dtype=torch.float64)
    return dist.all_reduce_sum(flag)[0].item() > 0


def _early_stopping(ctx: LoopContext, val_loss: float) -> bool:
    """Track the best validation loss (and save its checkpoint); True when the loss has not
    improved meaningfully — by more than `min_delta`, auto: PLATEAU_DELTA of the best loss —
    in `patience` evaluations. A small improvement still makes the best weights, but does not
    reset the count: a plateau that creeps down by 0.1 % per evaluation stops the run."""
    es, st = ctx.spec.early_stopping, ctx.state
    enabled = es.enabled is True
    best = st.best_val_loss
    if best is None or val_loss < best:
        delta = es.min_delta if es.min_delta != "auto" else PLATEAU_DELTA * abs(best or 0.0)
        meaningful = best is None or val_loss < best - float(delta)
        st.best_val_loss, st.best_step = val_loss, st.step
        st.evals_since_best = 0 if meaningful else st.evals_since_best + 1
        if enabled and st.step % ctx.spec.save_every_steps != 0:
            save(ctx)  # the best weights must survive to be restored
    else:
        st.evals_since_best += 1
    return enabled and st.evals_since_best >= es.patience


@torch.no_grad()
def evaluate(ctx: LoopContext) -> dict[str, float]:
    """The objective's validation metrics over all held-out rows (all ranks). An objective
    whose validation is not a forward pass (GRPO samples and grades) brings its own."""
    own = getattr(ctx.objective, "evaluate", None)
    if own is not None:
        return own(ctx)
    world, rank, bs = ctx.info.world_size, ctx.info.rank, ctx.spec.batch_size
    mine = ctx.val_rows[rank::world]
    n_batches = math.ceil(math.ceil(len(ctx.val_rows) / world) / bs)
    ctx.model.eval()
    sums: dict[str, float] = {}
    try:
        for i in range(n_batches):
            rows = mine[i * bs : (i + 1) * bs]
            if not rows:  # keep every rank in step (FSDP needs all of them in each forward)
                rows = [ctx.objective.blank(ctx.val_rows[0])]
            with _autocast(ctx):
                out = ctx.wrapped(**ctx.objective.collate(rows, ctx.device))
            for key, value in out.items():
                sums[key] = sums.get(key, 0.0) + float(value)
    finally:
        ctx.model.train()
    keys = sorted(sums)
    total = dist.all_reduce_sum(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
    return ctx.objective.validation_metrics({k: total[i].item() for i, k in enumerate(keys)})


def state_module(ctx: LoopContext) -> Any:
    """The module whose state is checkpointed: the DDP/FSDP-wrapped loss module without a
    torch.compile wrapper, so checkpoints from compiled and plain runs are interchangeable."""
    return getattr(ctx.wrapped, "_orig_mod", ctx.wrapped)


def save(ctx: LoopContext) -> None:
    """Checkpoint now (collective: every rank calls it; rank 0 writes)."""
    full = ctx.spec.adapter == "none"
    model_sd, optim_sd = ckpt.gather_state(state_module(ctx), ctx.optimizer, full=full)
    rngs = dist.gather_objects(ckpt.rng_state())
    if ctx.info.is_main:
        state = asdict(ctx.state)
        state["scheduler"] = ctx.scheduler.state_dict()
        state["world_size"] = ctx.info.world_size
        protect = {ctx.state.best_step} if ctx.state.best_step is not None else set()
        path = ckpt.save_checkpoint(
            ctx.run,
            ctx.state.step,
            model_state=model_sd,
            optimizer_state=optim_sd,
            trainer_state=state,
            rng_states=rngs,
            keep=ctx.spec.keep_checkpoints,
            protect=protect if ctx.spec.early_stopping.enabled is True else set(),
        )
        ctx.report(
            Event(
                "checkpoint",
                phase="train",
                step=ctx.state.step,
                message=f"checkpoint saved: {path}",
                data={"path": str(path), "step": ctx.state.step},
            )
        )
    dist.barrier()


def restore(ctx: LoopContext, path: Path, *, weights_only: bool = False) -> None:
    """Load a checkpoint into the running loop (resume), or only its weights (best model)."""
    contents = ckpt.read_checkpoint(path)
    if weights_only:
        ckpt.load_model_weights(state_module(ctx), contents["model"])
        return
    ckpt.load_training_state(state_module(ctx), ctx.optimizer, contents)
    saved = contents["trainer_state"]
    ctx.scheduler.load_state_dict(saved.pop("scheduler"))
    saved.pop("world_size", None)
    ctx.state = LoopState(**{k: v for k, v in saved.items() if k in LoopState.__annotations__})
    rngs = contents["rng"]
    if rngs:
        ckpt.set_rng_state(rngs[ctx.info.rank] if ctx.info.rank < len(rngs) else rngs[0])
