"""The CLI's view of the event stream: progress bars and log lines, drawn here and only here.

`EventView` is a `tunesmith.events.Reporter`: every long `api` call reports through it. With
bars, each progress phase gets a rich progress bar (training's bar shows loss and trained
tokens/s); without (`--no-progress`, or not a terminal), progress is printed as plain lines,
thinned to about 50 per phase. Messages always print; warnings stand out.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from tunesmith.cli.app import err_console
from tunesmith.events import Event


def duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def metrics_line(step: int, total: int | None, data: dict[str, Any]) -> str:
    """One training step as a log line (loss, lr, grad norm, tok/s, ETA)."""
    parts = [f"step {step}/{total}" if total else f"step {step}"]
    for key, fmt in (("loss", ".4f"), ("lr", ".2e"), ("grad_norm", ".3f")):
        if isinstance(data.get(key), (int, float)):
            parts.append(f"{key} {data[key]:{fmt}}")
    if isinstance(data.get("tokens_per_s"), (int, float)):
        parts.append(rate(data))
    if total and step and data.get("elapsed_s") and data.get("start_step", 0) < step:
        per_step = data["elapsed_s"] / max(1, step)
        parts.append(f"ETA {duration(per_step * (total - step))}")
    return "  ".join(parts)


def rate(data: dict[str, Any]) -> str:
    """The step rate in the objective's unit: trained tokens/s, pairs/s for DPO/ORPO, sampled
    completions/s for GRPO (the loop reports its unit per second under one key)."""
    if "frac_zero_std" in data:
        return f"{data['tokens_per_s']:.2f} completions/s  reward {data.get('reward', 0.0):.3f}"
    if "preference_accuracy" in data:
        return f"{data['tokens_per_s']:.2f} pairs/s"
    return f"{data['tokens_per_s']:.0f} tok/s"


def validation_line(step: int | None, data: dict[str, Any]) -> str:
    parts = [f"step {step}: val_loss {data['val_loss']:.4f}"]
    if "val_perplexity" in data:
        parts.append(f"ppl {data['val_perplexity']:.2f}")
    if "val_token_accuracy" in data:
        parts.append(f"token acc {data['val_token_accuracy']:.3f}")
    if "val_preference_accuracy" in data:
        parts.append(f"preference acc {data['val_preference_accuracy']:.3f}")
    if "val_reward_margin" in data:
        parts.append(f"reward margin {data['val_reward_margin']:.3f}")
    if "val_reward" in data:
        parts.append(f"reward {data['val_reward']:.3f}")
    return "  ".join(parts)


def _count(done: float, total: float | None, unit: Any) -> str:
    """'3/10' for things counted one by one; a percentage for bytes and percent."""
    if unit in ("bytes", "%") and total:
        return f"{100 * done / total:.0f}%"
    return f"{int(done)}/{int(total)}" if total else f"{int(done)}"


class EventView:
    """Draw events on the console. Use as a context manager around the api call."""

    def __init__(self, *, bars: bool = True, console: Console | None = None):
        self.console = console or err_console
        self.bars = bars and self.console.is_terminal
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._lines: dict[str, float] = {}  # phase -> last fraction printed (plain mode)

    def __enter__(self) -> EventView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()

    # -- the Reporter --------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        if event.kind == "progress":
            self._on_progress(event)
        elif event.kind == "metrics":
            self._on_metrics(event)
        elif event.kind in ("message", "checkpoint", "status", "result") and event.message:
            self.print(event.message, level=event.level)

    def print(self, text: str, *, level: str = "info") -> None:
        if level == "debug":
            return
        style = {"warning": "yellow", "error": "bold red"}.get(level)
        # user data (file names, keys) may hold brackets: never interpret it as rich markup
        line = Text(text, style=style or "")
        # soft_wrap: a long line (a verdict, a path) stays one line the terminal wraps, so it
        # can be copied whole
        if self._progress is not None:
            self._progress.console.print(line, highlight=False, soft_wrap=True)
        else:
            self.console.print(line, highlight=False, soft_wrap=True)

    # -- progress ------------------------------------------------------------------------------
    def _bar(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[count]}"),
                TextColumn("{task.fields[extra]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        return self._progress

    def _update(
        self, phase: str, label: str, done: float, total: float | None, extra: str, count: str
    ) -> None:
        bar = self._bar()
        if phase not in self._tasks:
            self._tasks[phase] = bar.add_task(label, total=total or None, extra=extra, count=count)
        bar.update(
            self._tasks[phase],
            completed=done,
            total=total or None,
            description=label,
            extra=extra,
            count=count,
        )

    def _on_progress(self, event: Event) -> None:
        done = float(event.done or 0)
        total = float(event.total) if event.total else None
        label = event.message or event.phase
        count = _count(done, total, event.data.get("unit"))
        if self.bars:
            self._update(event.phase, label, done, total, "", count)
            return
        frac = done / total if total else 0.0
        last = self._lines.get(event.phase)
        if last is None or frac >= 1.0 or frac - last >= 0.02:
            if last is not None and last >= 1.0:
                return
            self._lines[event.phase] = frac
            self.print(f"{label}: {count}")

    def _on_metrics(self, event: Event) -> None:
        data = event.data
        step = int(event.step or 0)
        total = int(event.total) if event.total else None
        if "val_loss" in data:
            self.print(validation_line(step, data))
        if "loss" not in data:
            return
        if self.bars:
            extra = f"loss {data['loss']:.4f}"
            if isinstance(data.get("tokens_per_s"), (int, float)):
                extra += f"  {rate(data)}"
            phase = event.phase or "train"
            self._update(phase, phase, step, total, extra, _count(step, total, None))
            return
        every = max(1, (total or 50) // 50)
        if step % every and step != total:
            return
        self.print(metrics_line(step, total, data))
