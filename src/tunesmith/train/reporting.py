"""Where a run's events are kept: events.jsonl, metrics.jsonl and TensorBoard.

The loop reports through one `Reporter` (tunesmith.events); on rank 0 `run_reporter` fans each
event out to the run's event log, the metrics file, TensorBoard and the caller's reporter.
`metrics.jsonl` is the source of truth for numbers: one JSON object per logged step (with the
validation numbers on evaluation steps), flushed line by line so a killed run keeps every
finished step; on resume the lines past the checkpoint are dropped (RunDir.truncate_metrics)
so the file reads as one uninterrupted run. Reporters never change training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from tunesmith.events import Event, EventLog, Reporter, fan_out
from tunesmith.runs import RunDir


class MetricsFile:
    """Appends each training `metrics` event's numbers to metrics.jsonl. Opened at the first
    record, so a resume can first cut the file back to its checkpoint."""

    def __init__(self, path: Path):
        self.path = path
        self._fh: IO[str] | None = None
        self._closed = False

    def __call__(self, event: Event) -> None:
        if event.kind != "metrics" or event.phase != "train" or self._closed:
            return
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        # flush (not fsync): a killed process loses nothing that reached the kernel
        self._fh.write(json.dumps(event.data, sort_keys=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._closed = True
        if self._fh is not None:
            self._fh.close()


class TensorBoardLog:
    """Scalars of each metrics event: train/* and eval/* (val_ keys)."""

    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir), flush_secs=10)

    def __call__(self, event: Event) -> None:
        if event.kind != "metrics" or event.step is None:
            return
        for key, value in event.data.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                group = "eval" if key.startswith("val_") else "train"
                self.writer.add_scalar(f"{group}/{key}", value, int(event.step))

    def close(self) -> None:
        self.writer.close()


class RunReporter:
    """The run's own records plus the caller's reporter, as one Reporter; close() when done."""

    def __init__(self, run: RunDir, on_event: Reporter | None):
        self._parts: list[EventLog | MetricsFile | TensorBoardLog] = [
            EventLog(run.events),
            MetricsFile(run.metrics),
            TensorBoardLog(run.tensorboard),
        ]
        self._report = fan_out(*self._parts, on_event)

    def __call__(self, event: Event) -> None:
        self._report(event)

    def close(self) -> None:
        for part in self._parts:
            part.close()
