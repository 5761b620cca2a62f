"""Where the loop's numbers go: metrics.jsonl, TensorBoard, a progress bar, a log.

The loop calls every sink with the same plain dict; sinks never change training. Only rank 0
gets sinks. `metrics.jsonl` is the source of truth (one JSON object per logged step, flushed
line by line so a killed run keeps every finished step); on resume the lines past the
checkpoint are dropped so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Sink:
    def on_start(self, total_steps: int, start_step: int) -> None: ...

    def on_log(self, record: dict[str, Any]) -> None: ...

    def on_eval(self, record: dict[str, Any]) -> None: ...

    def on_message(self, text: str) -> None: ...

    def close(self) -> None: ...


class JsonlSink(Sink):
    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)

    def on_log(self, record: dict[str, Any]) -> None:
        # flush (not fsync): a killed process loses nothing that reached the kernel, and an
        # fsync per step would cost more than a small model's step on a GPU.
        self._fh.write(json.dumps(record, sort_keys=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only records up to `last_step` (a resumed run replays the later steps)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if int(rec.get("step", 0)) <= last_step:
            kept.append(line)
    from tunesmith.train.run_dir import atomic_write_text

    atomic_write_text(path, "".join(k + "\n" for k in kept))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class TensorBoardSink(Sink):
    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir), flush_secs=10)

    def on_log(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                group = "eval" if key.startswith("val_") else "train"
                self.writer.add_scalar(f"{group}/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


class LogSink(Sink):
    """Lines of text (resolved config, trainable params, checkpoints, warnings)."""

    def __init__(self, emit: Callable[[str], None]):
        self.emit = emit
        self.total = 0
        self.start_step = 0

    def on_start(self, total_steps: int, start_step: int) -> None:
        self.total, self.start_step = total_steps, start_step

    def on_log(self, record: dict[str, Any]) -> None:
        """A line per log step, thinned to ~50 lines a run (plus the last step)."""
        step = int(record["step"])
        every = max(1, self.total // 50)
        if step % every and step != self.total:
            return
        done = step - self.start_step
        eta = ""
        if done > 0 and record.get("elapsed_s"):
            per_step = record["elapsed_s"] / max(1, step)
            eta = f"  ETA {_duration(per_step * (self.total - step))}"
        self.emit(
            f"step {step}/{self.total}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
            f"grad_norm {record['grad_norm']:.3f}  {record['tokens_per_s']:.0f} tok/s{eta}"
        )

    def on_message(self, text: str) -> None:
        self.emit(text)

    def on_eval(self, record: dict[str, Any]) -> None:
        self.emit(
            f"step {record['step']}: val_loss {record['val_loss']:.4f}  "
            f"ppl {record['val_perplexity']:.2f}  token acc {record['val_token_accuracy']:.3f}"
        )


class ProgressSink(Sink):
    """A rich progress bar: step, loss, trained tokens/s and ETA."""

    def __init__(self, console: Any = None):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: Any = None

    def on_start(self, total_steps: int, start_step: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=total_steps, completed=start_step, loss="-", tps="-"
        )

    def on_log(self, record: dict[str, Any]) -> None:
        if self.task is None:
            return
        self.progress.update(
            self.task,
            completed=record["step"],
            loss=f"{record['loss']:.4f}",
            tps=f"{record['tokens_per_s']:.0f}",
        )

    def on_message(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)

    def on_eval(self, record: dict[str, Any]) -> None:
        self.progress.console.print(
            f"step {record['step']}: val_loss {record['val_loss']:.4f}  "
            f"ppl {record['val_perplexity']:.2f}  token acc {record['val_token_accuracy']:.3f}",
            highlight=False,
        )

    def close(self) -> None:
        self.progress.stop()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Sinks:
    """Fan-out to every sink."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks
        self.started = time.time()

    def start(self, total_steps: int, start_step: int) -> None:
        for s in self.sinks:
            s.on_start(total_steps, start_step)

    def log(self, record: dict[str, Any]) -> None:
        for s in self.sinks:
            s.on_log(record)

    def eval(self, record: dict[str, Any]) -> None:
        for s in self.sinks:
            s.on_eval(record)

    def message(self, text: str) -> None:
        for s in self.sinks:
            s.on_message(text)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
