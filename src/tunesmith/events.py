"""One event type for everything long-running, and the one event log a run writes.

Every long `tunesmith.api` call takes `on_event: Reporter` and reports through it: progress
(`done`/`total` of a phase), training metrics, messages and warnings, status changes,
checkpoints. The library never draws anything itself: the CLI turns events into progress bars
and log lines, the server stores and replays them. Training also appends each event to
`RUN_DIR/events.jsonl` (one JSON object a line, flushed per event) so another process can
follow a live run with `follow()`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# What an event says. `progress`: done/total of a phase; `metrics`: a training step's numbers
# (in `data`); `message`: a line for a person; `status`: the run changed state (data.status);
# `checkpoint`: a checkpoint was saved (data.path, step); `result`: a phase's outcome.
Kind = Literal["progress", "metrics", "message", "status", "checkpoint", "result"]
Level = Literal["debug", "info", "warning", "error"]
KINDS: tuple[str, ...] = ("progress", "metrics", "message", "status", "checkpoint", "result")
LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Event:
    kind: Kind
    phase: str = ""  # e.g. "train", "validate", "generate:tuned", "export", "pull"
    message: str = ""
    step: int | None = None
    done: int | float | None = None
    total: int | float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    level: Level = "info"
    timestamp: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "phase": self.phase, "level": self.level}
        for key in ("message", "step", "done", "total"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = value
        if self.data:
            out["data"] = self.data
        out["timestamp"] = self.timestamp
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        kind = raw.get("kind")
        level = raw.get("level", "info")
        if kind not in KINDS or level not in LEVELS:
            raise ValueError(f"not an event: kind={kind!r} level={level!r}")
        return cls(
            kind=kind,
            phase=str(raw.get("phase", "")),
            message=str(raw.get("message", "")),
            step=raw.get("step"),
            done=raw.get("done"),
            total=raw.get("total"),
            data=dict(raw.get("data") or {}),
            level=level,
            timestamp=float(raw.get("timestamp", 0.0)),
        )


Reporter = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The reporter of a caller that wants no events."""


def reporter(on_event: Reporter | None) -> Reporter:
    return on_event if on_event is not None else ignore


def message(text: str, *, phase: str = "", level: Level = "info", **data: Any) -> Event:
    return Event("message", phase=phase, message=text, level=level, data=data)


def progress(
    phase: str, done: float, total: float | None, text: str = "", *, unit: str | None = None
) -> Event:
    """`done` of `total` in a phase; `unit` says what is counted ("bytes", "%", "examples"...;
    a view shows bytes and percent as a percentage)."""
    data = {"unit": unit} if unit else {}
    return Event("progress", phase=phase, done=done, total=total, message=text, data=data)


def fan_out(*reporters: Reporter | None) -> Reporter:
    """One reporter that hands each event to every given one (None entries skipped)."""
    live = [r for r in reporters if r is not None]

    def _all(event: Event) -> None:
        for r in live:
            r(event)

    return _all


class EventLog:
    """Append-only `events.jsonl`: one event a line, flushed per event (not fsync'ed: a killed
    process loses nothing the kernel has; an fsync per step would cost more than a GPU step).
    Use it as a Reporter."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)

    def __call__(self, event: Event) -> None:
        if self._fh.closed:
            return
        self._fh.write(json.dumps(event.to_dict(), ensure_ascii=False, default=str) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse(line: str) -> Event | None:
    try:
        return Event.from_dict(json.loads(line))
    except (ValueError, TypeError, AttributeError):
        return None  # a line cut by a kill, or not an event


def read_events(path: Path | str, *, after: int = 0) -> list[Event]:
    """Every complete event in the log, from line index `after` on."""
    path = Path(path)
    if not path.is_file():
        return []
    out: list[Event] = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < after or not line.endswith("\n"):
                continue
            event = _parse(line)
            if event is not None:
                out.append(event)
    return out


def follow(
    path: Path | str,
    *,
    stop: Callable[[], bool],
    poll_s: float = 0.1,
    offset: int = 0,
) -> Iterator[Event]:
    """Yield events as a live run appends them, until `stop()` is true and the log is drained.

    Reads only whole lines (a line still being written waits for its newline); starts at byte
    `offset`; survives the file not existing yet."""
    path = Path(path)
    pending = ""
    while True:
        finished = stop()  # read after deciding, so nothing written before stop is missed
        if path.is_file():
            with open(path, encoding="utf-8") as fh:
                fh.seek(offset)
                chunk = fh.read()
                offset = fh.tell()
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                event = _parse(line)
                if event is not None:
                    yield event
        if finished:
            return
        time.sleep(poll_s)
