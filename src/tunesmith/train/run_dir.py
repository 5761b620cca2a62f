"""The run directory: every run is a folder that says what ran, on what, and what came out.

Layout:
  config.yaml        the resolved spec (every `auto` replaced, with notes on why)
  manifest.json      dataset SHA-256s, base model (name, path, weight hash), library versions,
                     seed, hardware, status
  metrics.jsonl      one JSON object per logged step (and per validation)
  tensorboard/       TensorBoard event files
  checkpoints/step-N complete checkpoints (see checkpoint.py)
  final/             adapter or full weights + tokenizer + chat template
  CANCEL             touch this file to stop the run gracefully (a checkpoint is saved)
Writes that other processes read (manifest, config) are atomic: temp file + rename.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

CONFIG = "config.yaml"
MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
CANCEL = "CANCEL"
FINAL = "final"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see the old or the new file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def default_run_dir(model: str) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(str(model)).name)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{slug}-{stamp}"


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
    return {
        "kind": "tunesmith-run",
        "method": spec.method,
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


def update_manifest(run_dir: Path, **fields: Any) -> None:
    path = Path(run_dir) / MANIFEST
    data = read_json(path) if path.is_file() else {}
    data.update(fields)
    write_json(path, data)


class RunLock:
    """One process trains in a run directory at a time: two writers (a second `--resume`
    while the first still runs) would interleave checkpoints and metrics. An OS file lock,
    released by the kernel when the holder dies, so a kill -9 never leaves a stale lock."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self._fh: Any = None

    def acquire(self) -> RunLock:
        from tunesmith.errors import ConfigError

        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            return self
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the run)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise ConfigError(
                f"run directory {self.path.parent} is in use by another process (pid {holder})",
                hint="wait for it to finish, or cancel it: touch RUN_DIR/CANCEL",
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
