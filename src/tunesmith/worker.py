"""A worker: claims a queued job from the store, trains it in its own process, reports.

One worker runs one job at a time:
  1. claim a job (a lease in the store: nobody else runs it while the lease is renewed);
  2. write the job's run spec (its OpenAI method mapped onto ours: method_spec) and start
     `tunesmith train` in a child process (a list of arguments, no shell; under `torchrun`
     when the operator asks for several GPUs); a job whose run directory already holds
     checkpoints is resumed (`--resume`) — that is how a job survives its worker's death and
     how a paused job continues;
  3. follow the run's events.jsonl, turn its metrics (OpenAI's names; an objective's own
     statistics as train_… / valid_…) and messages into job events and its checkpoints into
     job checkpoints; once the run has resolved its spec, show the job's "auto"
     hyperparameters as the values it trains with; renew the lease; a job cancelled or
     paused in the store is stopped through the run's cancel request (the child saves a
     checkpoint and exits);
  4. record the outcome: `succeeded` with the model name, trained tokens and a results CSV,
     `failed` with the reason, `paused` (back to the queue on resume), or leave `cancelled`.
The child dies with its worker (PR_SET_PDEATHSIG): a job is never trained twice at once.
"""

from __future__ import annotations

import csv
import io as _io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tunesmith import events
from tunesmith.io import atomic_write
from tunesmith.runs import RunDir
from tunesmith.service import ServerSettings
from tunesmith.store import queue, repo
from tunesmith.store.db import Store
from tunesmith.store.ids import new_id
from tunesmith.store.records import JobRecord

LEVELS = {"debug": "info", "info": "info", "warning": "warn", "error": "error"}


def fine_tuned_name(job: JobRecord) -> str:
    """`ft:BASE:SUFFIX:JOBID` (the suffix part is left out when the job has none)."""
    parts = ["ft", job.model, *([job.suffix] if job.suffix else []), job.id]
    return ":".join(parts)


def group_size(compute_multiplier: Any) -> int:
    """A reinforcement job's completions per prompt (GRPO's K) from OpenAI's
    `compute_multiplier` ("compute used for exploring"): K = clamp(round(4 x multiplier), 2,
    64), so "auto" (1.0) is our default K of 4, 0.5 halves it and 2 doubles it."""
    from tunesmith.config import DEFAULT_GROUP_SIZE

    if compute_multiplier in (None, "auto"):
        return DEFAULT_GROUP_SIZE
    return max(2, min(64, round(DEFAULT_GROUP_SIZE * float(compute_multiplier))))


def judges_of(settings: ServerSettings) -> dict[str, str] | None:
    """The judge models a reinforcement run may load (the operator's base models, by public
    name), once the run spec can carry them (a `judges` option of the reinforcement method);
    None before. The jobs route asks the same question before accepting a model grader."""
    from tunesmith.config import ReinforcementOptions

    return dict(settings.models) if "judges" in ReinforcementOptions.model_fields else None


def _given(hyper: dict[str, Any], name: str) -> bool:
    return hyper.get(name, "auto") not in ("auto", None)


def method_spec(
    job: JobRecord, allow_python: bool = False, judges: dict[str, str] | None = None
) -> dict[str, Any]:
    """The run spec's `method` for a job's OpenAI-shaped method: dpo's `beta` is
    dpo.beta; reinforcement's grader is reinforcement.grader, `compute_multiplier` the group
    size (group_size), `eval_samples` reinforcement.eval_samples, and the operator's
    allow_python_graders and base models (never the job's) reinforcement.allow_python and
    reinforcement.judges. `reasoning_effort` has
    nothing to set: our models have no reasoning mode (it is accepted and shown, as OpenAI
    shows it, and changes nothing)."""
    stored = job.method or {}
    kind = stored.get("type", "supervised")
    hyper = job.hyperparameters or {}
    if kind == "dpo":
        return (
            {"type": "dpo", "dpo": {"beta": float(hyper["beta"])}}
            if _given(hyper, "beta")
            else {"type": "dpo"}
        )
    if kind == "reinforcement":
        options: dict[str, Any] = {
            "grader": (stored.get("reinforcement") or {}).get("grader"),
            "samples_per_prompt": group_size(hyper.get("compute_multiplier")),
        }
        if _given(hyper, "eval_samples"):
            options["eval_samples"] = int(hyper["eval_samples"])
        if allow_python:  # the server checked the grader under the same setting
            options["allow_python"] = True
        if judges:  # score_model / label_model judges: the operator's models, by public name
            options["judges"] = dict(judges)
        return {"type": "reinforcement", "reinforcement": options}
    return {"type": kind}


def job_spec(job: JobRecord, settings: ServerSettings, files: dict[str, str]) -> dict[str, Any]:
    """The run spec of a job: the operator's defaults, then what the job asked for."""
    hyper = job.hyperparameters or {}
    spec: dict[str, Any] = json.loads(json.dumps(settings.job_defaults))  # a deep copy
    spec["model"] = settings.models[job.model]
    data = spec.setdefault("data", {})
    data["train"] = files["training_file"]
    if files.get("validation_file"):
        data["validation"] = files["validation_file"]
    spec["output_dir"] = str(run_dir_of(job, settings).path)
    spec["seed"] = int(job.seed)
    spec["method"] = method_spec(job, settings.allow_python_graders, judges_of(settings))
    if _given(hyper, "n_epochs"):
        spec["epochs"] = int(hyper["n_epochs"])
    if _given(hyper, "batch_size"):
        spec["batch_size"] = int(hyper["batch_size"])
    if _given(hyper, "learning_rate_multiplier"):
        spec["lr_multiplier"] = float(hyper["learning_rate_multiplier"])
    spec.setdefault("eval", {})["compare_base"] = bool(files.get("validation_file"))
    if _given(hyper, "eval_interval"):
        spec["eval"]["every_steps"] = int(hyper["eval_interval"])
    return spec


def resolved_hyperparameters(job: JobRecord, config: dict[str, Any]) -> dict[str, Any]:
    """The job's hyperparameters with every "auto" replaced by what the run resolved it to
    (RUN/config.yaml), as OpenAI's job object shows them once training starts. batch_size is
    examples per optimizer step (batch x grad_accum x processes), OpenAI's meaning."""
    from tunesmith.config import DEFAULT_GROUP_SIZE

    hyper = dict(job.hyperparameters or {})
    method = config.get("method") or {}
    rl = method.get("reinforcement") or {}
    values: dict[str, Any] = {
        "n_epochs": config.get("epochs"),
        "batch_size": int(config.get("batch_size") or 1)
        * int(config.get("grad_accum") or 1)
        * int(config.get("world_size") or 1),
        "learning_rate_multiplier": config.get("lr_multiplier"),
        "beta": (method.get("dpo") or {}).get("beta"),
        "compute_multiplier": rl["samples_per_prompt"] / DEFAULT_GROUP_SIZE
        if rl.get("samples_per_prompt")
        else None,
        "eval_interval": config.get("eval_every_steps"),
        "eval_samples": rl.get("eval_samples"),
    }
    for name, value in values.items():
        if hyper.get(name) == "auto" and value is not None:
            hyper[name] = value
    return hyper


def run_dir_of(job: JobRecord, settings: ServerSettings) -> RunDir:
    return RunDir(settings.jobs_dir / job.id / "run")


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# Our metric names -> OpenAI's (the fixed names of its metrics events and results CSV).
OPENAI_METRICS = {
    "loss": "train_loss",
    "token_accuracy": "train_mean_token_accuracy",
    "val_loss": "valid_loss",
    "val_token_accuracy": "valid_mean_token_accuracy",
}
# Bookkeeping of a step, passed on under its own name.
STEP_FIELDS = ("lr", "grad_norm", "trained_tokens", "tokens_per_s", "epoch")
NOT_METRICS = {"step", "elapsed_s"}
# What a metrics event's message says, when the step has it (a DPO job's accuracy of its
# preferences, a reinforcement job's mean reward).
EVENT_TEXT = (
    ("train_loss", "training loss"),
    ("train_preference_accuracy", "preference accuracy"),
    ("train_reward", "reward"),
    ("valid_loss", "validation loss"),
    ("valid_preference_accuracy", "validation preference accuracy"),
    ("valid_reward", "validation reward"),
)
RESULT_COLUMNS = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]


def metric_name(ours: str) -> str | None:
    """The name a metric of ours has in a job's events: OpenAI's where it has one, else
    `train_…` / `valid_…` after OpenAI's pattern — the objective's own statistics (DPO's
    reward_margin -> train_reward_margin, val_preference_accuracy ->
    valid_preference_accuracy; GRPO's rewards likewise). None: not a metric."""
    if ours in OPENAI_METRICS:
        return OPENAI_METRICS[ours]
    if ours in STEP_FIELDS:
        return ours
    if ours in NOT_METRICS:
        return None
    return "valid_" + ours[4:] if ours.startswith("val_") else "train_" + ours


def metrics_event(data: dict[str, Any], total: int | None) -> dict[str, Any]:
    """Our step record in OpenAI's metrics-event shape (fixed field names)."""
    out: dict[str, Any] = {"step": data.get("step"), "total_steps": total}
    for ours, value in data.items():
        name = metric_name(ours)
        if name is not None and isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = value
    return out


def results_csv(run: RunDir, method: str = "supervised") -> str:
    """OpenAI's results CSV (step, train_loss, train_accuracy, valid_loss,
    valid_mean_token_accuracy); for the other methods, then a column for each statistic of
    their objective the metrics hold (a DPO job's train_reward_margin,
    train_preference_accuracy, valid_preference_accuracy, …)."""
    rows = run.read_metrics()
    extra: list[str] = []
    for m in rows if method != "supervised" else []:
        for ours, value in m.items():
            name = metric_name(ours)
            if (
                name is not None
                and ours not in OPENAI_METRICS
                and ours not in STEP_FIELDS
                and name not in extra
                and isinstance(value, int | float)
            ):
                extra.append(name)
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*RESULT_COLUMNS, *extra])
    for m in rows:
        named = {metric_name(k): v for k, v in m.items()}
        w.writerow(
            [
                m.get("step"),
                m.get("loss"),
                m.get("token_accuracy"),
                m.get("val_loss", ""),
                m.get("val_token_accuracy", ""),
                *(named.get(name, "") for name in extra),
            ]
        )
    return buf.getvalue()


def user_error(log: Path) -> str | None:
    """The one-line error the CLI printed for a user error (exit code 2: a bad spec or data,
    refused before the run wrote its manifest), from the end of the child's output: what the
    job's `error.message` says instead of just the exit code. Never a traceback."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 65536))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = tail.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("error: "):
            return "\n".join(lines[i:])[len("error: ") :].strip()[:2000] or None
    return None


class Worker:
    def __init__(self, settings: ServerSettings, *, worker_id: str | None = None):
        self.settings = settings
        self.store = Store(settings.db_url)
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{new_id('job')[-6:]}"
        self.stop = threading.Event()

    def close(self) -> None:
        self.store.close()

    def run(self, *, poll_s: float = 1.0, max_jobs: int | None = None) -> int:
        """Claim and run jobs until stopped (or `max_jobs` have run); returns how many ran."""
        done = 0
        while not self.stop.is_set() and (max_jobs is None or done < max_jobs):
            job = queue.claim(self.store, self.id, lease_s=self.settings.lease_s)
            if job is None:
                self.stop.wait(poll_s)
                continue
            self.run_job(job)
            done += 1
        return done

    # -- one job ------------------------------------------------------------------------------
    def _say(self, job: JobRecord, text: str, level: str = "info") -> None:
        repo.add_events(self.store, job.id, [{"level": level, "message": text, "type": "message"}])

    def _files(self, job: JobRecord) -> dict[str, str] | None:
        out: dict[str, str] = {}
        for param in ("training_file", "validation_file"):
            file_id = getattr(job, param)
            if not file_id:
                continue
            record = repo.get_file(self.store, job.project, file_id)
            if record is None or not Path(record.path).is_file():
                queue.finish(
                    self.store,
                    job.id,
                    self.id,
                    "failed",
                    error={
                        "code": f"invalid_{param}",
                        "param": param,
                        "message": f"{param} {file_id} no longer exists",
                    },
                )
                return None
            out[param] = record.path
        return out

    def _command(self, job: JobRecord, run: RunDir) -> list[str]:
        base = [sys.executable, "-m", "tunesmith.cli", "train"]
        if self.settings.gpus_per_job > 1:  # one process per GPU, PyTorch's own launcher
            n = str(self.settings.gpus_per_job)
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            base = [*launcher, "--nproc-per-node", n, "-m", "tunesmith.cli", "train"]
        if run.holds_run():
            return [*base, "--resume", str(run.path), "--no-progress"]
        files = self._files(job)
        if files is None:
            return []
        spec = job_spec(job, self.settings, files)
        path = self.settings.jobs_dir / job.id / "spec.json"
        atomic_write(path, json.dumps(spec, indent=2))
        return [*base, str(path), "--no-progress"]

    def run_job(self, job: JobRecord) -> None:
        run = run_dir_of(job, self.settings)
        run.path.parent.mkdir(parents=True, exist_ok=True)
        repo.update_job(self.store, job.id, run_dir=str(run.path))
        if job.status == "pausing":  # taken over while pausing: it is paused now
            queue.release(self.store, job.id, self.id, to="paused")
            return
        if run.finished():  # the previous worker died after training, before recording
            self._succeed(job, run)
            return
        cmd = self._command(job, run)
        if not cmd:
            return
        resumed = "--resume" in cmd
        self._say(
            job,
            ("Resuming from the last checkpoint" if resumed else "Training started")
            + f" (worker {self.id})",
        )
        log = open(run.path.parent / "worker.log", "ab")  # noqa: SIM115 (the child's output)
        env = {**os.environ, "TUNESMITH_HOME": str(self.settings.home), "PYTHONUNBUFFERED": "1"}
        child = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent,
            close_fds=True,
        )
        try:
            outcome = self._follow(job, run, child)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            log.close()
        self._record(job, run, outcome, child.returncode)

    def _follow(self, job: JobRecord, run: RunDir, child: subprocess.Popen) -> str:
        """Forward events and keep the lease until the child exits. Returns 'done', 'lost'
        (the lease went to another worker: stop at once) or 'stopped' (this worker stops)."""
        offset_file = run.path.parent / "events.offset"
        offset = int(offset_file.read_text()) if offset_file.is_file() else 0
        total: int | None = None
        last_metrics: dict[str, Any] = {}
        stop_sent = False
        resolved = False
        next_beat = time.monotonic() + self.settings.heartbeat_s
        while True:
            finished = child.poll() is not None
            offset, total, last_metrics = self._forward(job, run, offset, total, last_metrics)
            atomic_write(offset_file, str(offset))
            if not resolved:
                resolved = self._resolve(job, run)
            if finished:
                return "done"
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.settings.heartbeat_s
                now = queue.heartbeat(self.store, job.id, self.id, lease_s=self.settings.lease_s)
                if now is None:
                    child.kill()
                    return "lost"
                if not stop_sent and (
                    now.cancel_requested or now.status in ("cancelled", "pausing")
                ):
                    run.request_cancel()  # the child checkpoints and exits
                    stop_sent = True
            if self.stop.is_set() and not stop_sent:
                run.request_cancel()
                stop_sent = True
            time.sleep(0.2)

    def _forward(
        self, job: JobRecord, run: RunDir, offset: int, total: int | None, last: dict[str, Any]
    ) -> tuple[int, int | None, dict[str, Any]]:
        if not run.events.is_file():
            return offset, total, last
        with open(run.events, encoding="utf-8") as fh:
            fh.seek(offset)
            chunk = fh.read()
        end = chunk.rfind("\n") + 1
        if end == 0:
            return offset, total, last
        rows: list[dict[str, Any]] = []
        for line in chunk[:end].splitlines():
            try:
                event = events.Event.from_dict(json.loads(line))
            except (ValueError, TypeError):
                continue
            if event.kind == "status" and event.total:
                total = int(event.total)
            if event.kind == "metrics":
                data = metrics_event(event.data, int(event.total or total or 0) or None)
                last = data
                parts = [f"Step {data['step']}/{data['total_steps']}"]
                for name, said in EVENT_TEXT:
                    if name in data:
                        parts.append(f"{said}={data[name]:.4f}")
                rows.append(
                    {
                        "level": "info",
                        "type": "metrics",
                        "message": ", ".join(parts),
                        "data": data,
                        "created_at": int(event.timestamp),
                    }
                )
                self._estimate(job, event)
            elif event.kind == "checkpoint" and event.step is not None:
                metrics = {
                    k: v
                    for k, v in last.items()
                    if k == "step" or k.startswith(("train_", "valid_"))
                }
                repo.add_checkpoint(
                    self.store,
                    job.id,
                    step=int(event.step),
                    metrics=metrics,
                    fine_tuned_model_checkpoint=f"{fine_tuned_name(job)}:ckpt-step-{event.step}",
                    path=str(event.data.get("path", run.checkpoint(int(event.step)))),
                )
                rows.append(
                    {
                        "level": "info",
                        "type": "message",
                        "created_at": int(event.timestamp),
                        "message": f"Checkpoint created at step {event.step}",
                    }
                )
                self._forget_pruned(job)
            elif event.kind == "message" and event.message and event.level != "debug":
                if event.phase == "setup" and event.message.startswith("resolved config:"):
                    continue  # long; the run directory keeps it
                rows.append(
                    {
                        "level": LEVELS.get(event.level, "info"),
                        "type": "message",
                        "message": self._public(event.message, job, run)[:2000],
                        "created_at": int(event.timestamp),
                    }
                )
        if rows:
            repo.add_events(self.store, job.id, rows)
        return offset + len(chunk[:end].encode("utf-8")), total, last

    def _public(self, message: str, job: JobRecord, run: RunDir) -> str:
        """A training message as the job's owner may read it: no server paths (the run's
        directory becomes the job id, anything else under our home `$TUNESMITH_HOME`)."""
        message = message.replace(str(run.path), job.id)
        return message.replace(str(self.settings.home), "$TUNESMITH_HOME")

    def _resolve(self, job: JobRecord, run: RunDir) -> bool:
        """Once the run has resolved its spec (RUN/config.yaml, written with its manifest, so
        a restarted job resumes it rather than building a new spec), the job shows the values
        it trains with instead of "auto". True when done (or nothing is left to do)."""
        if not (run.config.is_file() and run.is_run(run.path)):
            return False
        try:
            import yaml

            config = yaml.safe_load(run.config.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            return False
        if not isinstance(config, dict):
            return False
        hyper = resolved_hyperparameters(job, config)
        if hyper != (job.hyperparameters or {}):
            repo.update_job(self.store, job.id, hyperparameters=hyper)
        return True

    def _forget_pruned(self, job: JobRecord) -> None:
        """The run keeps its newest checkpoints (keep_checkpoints) and deletes older ones; a
        checkpoint gone from disk is no longer a model."""
        listed, _ = repo.list_checkpoints(self.store, job.id, limit=1000)
        for ckpt in listed:
            if not Path(ckpt.path).is_dir():
                repo.delete_model(self.store, job.project, ckpt.fine_tuned_model_checkpoint)

    def _estimate(self, job: JobRecord, event: events.Event) -> None:
        step, total = event.step or 0, event.total or 0
        elapsed = float(event.data.get("elapsed_s") or 0.0)
        if step and total and elapsed:
            eta = time.time() + elapsed / step * (total - step)
            repo.update_job(self.store, job.id, estimated_finish=int(eta))

    def _record(self, job: JobRecord, run: RunDir, outcome: str, code: int | None) -> None:
        if outcome == "lost":
            return  # another worker owns the job now
        status = run.status
        current = repo.get_job_any(self.store, job.id)
        if status in ("completed", "early_stopped") and run.has_final():
            self._succeed(job, run)
        elif status == "cancelled" or outcome == "stopped" or self.stop.is_set():
            if current is not None and current.status == "pausing":
                queue.release(self.store, job.id, self.id, to="paused")
                self._say(job, "Job paused; resume continues from the last checkpoint")
            elif current is not None and current.status == "cancelled":
                self._say(job, "Job cancelled")
            else:  # this worker is shutting down: give the job back to the queue
                queue.release(self.store, job.id, self.id, to="queued")
        else:
            reason = (
                run.manifest().get("error")
                or (user_error(run.path.parent / "worker.log") if code == 2 else None)
                or f"the training process exited with code {code}"
            )
            error = {"code": "training_failed", "message": str(reason)[:2000], "param": None}
            queue.finish(self.store, job.id, self.id, "failed", error=error)
            self._say(job, f"Job failed: {reason}", "error")

    def _succeed(self, job: JobRecord, run: RunDir) -> None:
        manifest = run.manifest()
        path = self.settings.files_dir / new_id("file")
        text = results_csv(run, (job.method or {}).get("type", "supervised"))
        atomic_write(path, text)
        import hashlib

        record = repo.create_file(
            self.store,
            job.project,
            filename="step_metrics.csv",
            purpose="fine-tune-results",
            bytes=len(text.encode()),
            path=str(path),
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            status="processed",
        )
        name = fine_tuned_name(job)
        done = queue.finish(
            self.store,
            job.id,
            self.id,
            "succeeded",
            fine_tuned_model=name,
            trained_tokens=int(manifest.get("trained_tokens") or 0),
            result_files=[record.id],
            estimated_finish=None,
        )
        if done is not None:
            self._say(job, f"New fine-tuned model created: {name}")
            self._say(job, "The job has successfully completed")
