"""RunDir: the only code that knows how a run directory is laid out.

Every run is a folder that says what ran, on what, and what came out:

  config.yaml        the resolved spec (every `auto` replaced, with notes on why)
  manifest.json      kind, method, base model (name, path, weight hash), dataset SHA-256s,
                     library versions, seed, hardware, status, start/finish times
  metrics.jsonl      one JSON object per logged step (and per validation)
  events.jsonl       every event of the run (see tunesmith.events), one per line, append-only
  tensorboard/       TensorBoard event files
  checkpoints/step-N complete checkpoints (a COMPLETE marker is written last; checkpoint.py
                     owns what is inside one)
  final/             adapter or full weights + tokenizer + chat template
  eval/              the base-vs-tuned report (results.json, report.md, report.html) on the
                     run's own held-out data
  evals/<data>-<time>/  one report per later evaluation on other data (`tunesmith eval RUN
                     --data F`): eval/ is never replaced by those
  checkpoints/step-N/model/  the checkpoint written out as a loadable adapter or model, the
                     first time it is used as a model (RUN@step-N, RUN@best, RUN@latest)
  CANCEL             present = a cancel was requested (the run saves a checkpoint and stops)
  .lock              held by the one process training in the directory

Everything else asks a `RunDir` for a path or a fact; no other module spells these names.
Writes that other processes read (manifest, config) are atomic (tunesmith.io).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError, ModelError
from tunesmith.io import atomic_write, atomic_write_json, read_json

RUN_KIND = "tunesmith-run"
STATUSES = ("running", "completed", "early_stopped", "cancelled", "failed")
CHECKPOINT_COMPLETE = "COMPLETE"
# The checkpoint's trainable weights (train/checkpoint.py writes them; a checkpoint used as a
# model, models/checkpoint.py, reads them).
CHECKPOINT_WEIGHTS = "trainable.safetensors"
# How a checkpoint is named where a model is accepted: RUN@step-N (also N, and the server's
# ckpt-step-N), RUN@latest, RUN@best, or the folder RUN/checkpoints/step-N itself.
CHECKPOINT_NAME = re.compile(r"(?:ckpt-)?(?:step-)?(\d+)")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class RunDir:
    """A run directory (which need not exist yet)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # -- the layout ---------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def evals(self) -> Path:
        """Reports of later evaluations on other data, one folder each (never eval/)."""
        return self.path / "evals"

    def new_eval_dir(self, data: Path | str | None = None) -> Path:
        """A fresh folder for one evaluation of this run on `data`: evals/<data>-<time>/."""
        return new_eval_dir(self.evals, data)

    @property
    def cancel_file(self) -> Path:
        return self.path / "CANCEL"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    # -- what it is ---------------------------------------------------------------------------
    @staticmethod
    def is_run(path: Path | str) -> bool:
        """True for a directory a tunesmith training wrote (it has a manifest)."""
        return (Path(path) / "manifest.json").is_file()

    @classmethod
    def open(cls, path: Path | str) -> RunDir:
        """An existing run, or a ConfigError saying why `path` is not one."""
        run = cls(path)
        if not run.path.is_dir():
            raise ConfigError(f"run directory {run.path} does not exist")
        if not run.is_run(run.path):
            raise ConfigError(f"{run.path} is not a tunesmith run directory (no manifest.json)")
        return run

    def holds_run(self) -> bool:
        """Anything a training left here (a manifest or checkpoints)."""
        return self.manifest_path.exists() or self.checkpoints.exists()

    def has_final(self) -> bool:
        return self.final.is_dir()

    def finished(self) -> bool:
        return self.status in ("completed", "early_stopped") and self.has_final()

    # -- the manifest -------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """The manifest, or {} when there is none (or it cannot be read)."""
        try:
            data = read_json(self.manifest_path)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_manifest(self, data: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, data)

    def update_manifest(self, **fields: Any) -> None:
        data = self.manifest()
        data.update(fields)
        self.write_manifest(data)

    @property
    def status(self) -> str | None:
        return self.manifest().get("status")

    def set_status(self, status: str, **fields: Any) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        if status != "running":
            fields.setdefault("finished", now())
        self.update_manifest(status=status, **fields)

    def base_model(self) -> str | None:
        """The base model the run trained from: its resolved path, or the name as given."""
        m = self.manifest()
        return m.get("base_model_path") or m.get("base_model")

    # -- config -------------------------------------------------------------------------------
    def write_config(self, text: str) -> None:
        atomic_write(self.config, text)

    # -- cancel -------------------------------------------------------------------------------
    def request_cancel(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.cancel_file.touch()

    def cancel_requested(self) -> bool:
        return self.cancel_file.exists()

    def clear_cancel(self) -> None:
        self.cancel_file.unlink(missing_ok=True)

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step}"

    def checkpoint_temp(self, step: int) -> Path:
        """Where checkpoint `step` is written before it is renamed into place."""
        return self.checkpoints / f".tmp-step-{step}-{os.getpid()}"

    def complete_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, dir) of every complete checkpoint, oldest first."""
        found: list[tuple[int, Path]] = []
        if not self.checkpoints.is_dir():
            return found
        for d in self.checkpoints.iterdir():
            if d.is_dir() and d.name.startswith("step-") and (d / CHECKPOINT_COMPLETE).is_file():
                try:
                    found.append((int(d.name[5:]), d))
                except ValueError:
                    continue
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        found = self.complete_checkpoints()
        return found[-1][1] if found else None

    def resolve_checkpoint(self, ref: str | int) -> tuple[int, Path]:
        """The complete checkpoint `ref` names: `step-N` (also `N`, or the server's
        `ckpt-step-N`), `latest`, or `best` (the lowest validation loss among the complete
        checkpoints; the run's recorded best step when its checkpoint is kept). A ModelError
        lists the complete checkpoints when `ref` names none of them."""
        found = dict(self.complete_checkpoints())
        have = ", ".join(f"step-{s}" for s in found) or "none"
        text = str(ref).strip().lower()

        def missing(what: str) -> ModelError:
            return ModelError(
                f"run {self.path} has no complete checkpoint {what}",
                param="model",
                hint=f"complete checkpoints: {have}; use RUN@step-N, RUN@latest or RUN@best",
            )

        if text == "latest":
            if not found:
                raise missing("yet")
            step = max(found)
        elif text == "best":
            best = self._best_checkpoint_step(found)
            if best is None:
                raise missing("with a validation loss (best needs validation during training)")
            step = best
        else:
            m = CHECKPOINT_NAME.fullmatch(text)
            if m is None:
                raise ModelError(
                    f"'{ref}' does not name a checkpoint of run {self.path}",
                    param="model",
                    hint=f"use step-N, latest or best; complete checkpoints: {have}",
                )
            step = int(m.group(1))
        if step not in found:
            raise missing(f"step-{step}")
        return step, found[step]

    def _best_checkpoint_step(self, found: dict[int, Path]) -> int | None:
        recorded = self.manifest().get("best_step")
        if isinstance(recorded, int) and recorded in found:
            return recorded
        losses = {
            int(r["step"]): float(r["val_loss"])
            for r in self.read_metrics()
            if isinstance(r.get("val_loss"), (int, float)) and isinstance(r.get("step"), int)
        }
        scored = [(losses[s], s) for s in found if s in losses]
        return min(scored)[1] if scored else None

    def checkpoint_model(self, step: int) -> Path:
        """Where checkpoint `step` is written out as a loadable model (a peft adapter or a full
        model folder, like final/), the first time it is used as one. It lives inside the
        checkpoint, so pruning or re-saving the checkpoint takes it along."""
        return self.checkpoint(step) / "model"

    def incomplete_checkpoints(self) -> list[Path]:
        """Leftovers of a save that was killed (temp folders, step folders without marker)."""
        if not self.checkpoints.is_dir():
            return []
        return [
            d
            for d in self.checkpoints.iterdir()
            if d.is_dir() and (d.name.startswith(".") or not (d / CHECKPOINT_COMPLETE).is_file())
        ]

    # -- metrics ------------------------------------------------------------------------------
    def read_metrics(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.metrics.is_file():
            return out
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill
        return out

    def truncate_metrics(self, last_step: int) -> None:
        """Keep only records up to `last_step` (a resumed run replays the later steps)."""
        if not self.metrics.is_file():
            return
        kept = [r for r in self.read_metrics() if int(r.get("step", 0)) <= last_step]
        atomic_write(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def lock(self) -> RunLock:
        return RunLock(self)


def default_run_dir(model: str) -> RunDir:
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(str(model)).name)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return RunDir(Path("runs") / f"{slug}-{stamp}")


def new_eval_dir(root: Path | str, data: Path | str | None = None) -> Path:
    """A folder under `root` that does not exist yet, named after the data and the time."""
    stem = Path(str(data)).stem if data else "eval"
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).strip(".") or "eval"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(root) / f"{slug}-{stamp}"
    n = 2
    while out.exists():
        out = Path(root) / f"{slug}-{stamp}-{n}"
        n += 1
    return out


def checkpoint_ref(name: Path | str) -> tuple[RunDir, str] | None:
    """(run, checkpoint ref) when `name` names a checkpoint of a run: `RUN@step-N`,
    `RUN@latest`, `RUN@best`, or the folder `RUN/checkpoints/step-N`; None otherwise (also
    for an existing path that merely contains '@')."""
    text = str(name).strip()
    path = Path(text).expanduser()
    if path.exists():
        parent = path.parent
        in_run = parent.name == "checkpoints" and RunDir.is_run(parent.parent)
        if path.is_dir() and in_run and CHECKPOINT_NAME.fullmatch(path.name):
            return RunDir(parent.parent), path.name
        return None
    run, sep, ref = text.rpartition("@")
    if not sep or not run:
        return None
    run_path = Path(run).expanduser()
    if not RunDir.is_run(run_path):
        return None
    return RunDir(run_path), ref


def run_of(path: Path | str) -> RunDir | None:
    """The run that `path` is (a run directory) or lies in (its final/), else None."""
    p = Path(path)
    for candidate in (p, p.parent):
        if RunDir.is_run(candidate):
            return RunDir(candidate)
    return None


# -- the manifest's facts -------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_hash(model_dir: Path) -> str | None:
    """SHA-256 over the model's safetensors files (name + content), in name order."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def library_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for dist in ("tunesmith", "torch", "transformers", "peft", "safetensors", "bitsandbytes"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["python"] = platform.python_version()
    return out


def hardware(device: Any, world_size: int) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": str(device),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "world_size": world_size,
    }
    if torch.cuda.is_available():
        info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def build_manifest(
    *,
    spec: Any,
    base_model_path: Path,
    train_sha256: str | None,
    validation_sha256: str | None,
    device: Any,
    world_size: int,
    n_train: int,
    n_validation: int,
) -> dict[str, Any]:
    method = spec.method.type if hasattr(spec.method, "type") else spec.method
    return {
        "kind": RUN_KIND,
        "method": method,
        "adapter": spec.adapter,
        "base_model": spec.model,
        "base_model_path": str(base_model_path),
        "base_model_sha256": weights_hash(base_model_path),
        "data": {
            "train": str(spec.data.train) if spec.data.train else None,
            "train_sha256": train_sha256,
            "validation": str(spec.data.validation) if spec.data.validation else None,
            "validation_sha256": validation_sha256,
            "validation_fraction": spec.data.validation_fraction,
            "train_examples": n_train,
            "validation_examples": n_validation,
        },
        "seed": spec.seed,
        "libraries": library_versions(),
        "hardware": hardware(device, world_size),
        "status": "running",
        "started": now(),
        "finished": None,
    }


class RunLock:
    """One process trains in a run directory at a time: two writers (a second `--resume`
    while the first still runs) would interleave checkpoints and metrics. An OS file lock,
    released by the kernel when the holder dies, so a kill -9 never leaves a stale lock."""

    def __init__(self, run: RunDir):
        self.run = run
        self._fh: Any = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            return self
        fh = open(self.run.lock_file, "a+", encoding="utf-8")  # noqa: SIM115 (held for the run)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise ConfigError(
                f"run directory {self.run.path} is in use by another process (pid {holder})",
                hint="wait for it to finish, or cancel it: tunesmith cancel RUN_DIR",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing drops the flock
            self._fh = None
