"""One thread per model that batches whatever requests are waiting, step by step.

Why a thread that owns the model: a CPU (or one GPU) gains nothing from two forward passes at
once, but a lot from one forward pass over many rows, so every request for a model (and for
each LoRA adapter on it) goes into that model's inbox. The loop is iteration-level:
- idle, it waits for a request, then a few milliseconds more for others (up to `max_batch`);
- busy, new requests join between two decoding steps (their prompts are prefilled as a group
  and merged into the running KV cache): no one waits for a whole batch to finish;
- after every step each row's new text goes straight to its own sink, and a finished row
  (end of turn, stop string, max_tokens, or cancelled by its client) leaves the batch at once,
  with its `Completion`, so one long answer never holds back the short ones.
The model lock is held for each forward pass only; loading or evicting an adapter takes it
between steps.
"""

from __future__ import annotations

import abc
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from tunesmith.inference.batch import BASE, Batch, cache_kwarg
from tunesmith.inference.completion import Completion, TextStream
from tunesmith.inference.sampling import Sampler, pick_all

Item = str | Completion | BaseException


class Sink(Protocol):
    """Where a request's `(tag, item)`s go: a `queue.Queue`, or the server's `AsyncSink`
    (server/streaming.py) that hands them to the event loop without a waiting thread."""

    def put(self, item: tuple[Any, Item], /) -> None: ...


def new_sink() -> queue.Queue[tuple[Any, Item]]:
    return queue.Queue()


@dataclass(eq=False)
class Request:
    """One sequence to generate. Its pieces, then its `Completion` (or the error that ended
    it), arrive in `sink` as `(tag, item)`; several requests may share one sink."""

    ids: list[int]
    text: TextStream
    sampler: Sampler
    adapter: str = BASE
    sink: Sink = field(default_factory=new_sink)
    tag: Any = 0
    on_done: Callable[[], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    last: int = -1  # the newest token, fed to the next step
    finished: bool = False

    def cancel(self) -> None:
        """The client went away: the row leaves the batch at the next step."""
        self.cancelled.set()

    def emit(self, item: Item) -> None:
        self.sink.put((self.tag, item))

    def finish(self, error: BaseException | None = None) -> None:
        """Hand out the `Completion` (or `error`) and release what the request held; once."""
        if self.finished:
            return
        self.finished = True
        self.emit(error if error is not None else self.text.result())
        if self.on_done is not None:
            callback, self.on_done = self.on_done, None
            callback()


def results(
    sink: queue.Queue[tuple[Any, Item]], count: int
) -> Iterator[tuple[Any, str | Completion]]:
    """`(tag, piece or Completion)` from `sink` until `count` requests have completed; an
    error that ended a request is raised here."""
    left = count
    while left:
        tag, item = sink.get()
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, Completion):
            left -= 1
        yield tag, item


@dataclass
class _Fixed:
    """A model that never changes (no adapters come and go): the `source` of its scheduler."""

    model: Any
    mixed: Any = None


class Closed(RuntimeError):
    """A request submitted to an engine that has been closed (its model unloaded)."""


class Inbox(abc.ABC):
    """What every engine thread shares: an inbox of requests, a count of those not finished
    (`busy`), `submit`, and `close` (a marker after the requests already queued). Subclasses
    write `_run`, which takes requests from `self.inbox` until it gets None."""

    def _start(self, thread_name: str) -> None:
        self.inbox: queue.Queue[Request | None] = queue.Queue()
        self._open = 0  # requests submitted and not finished yet
        self._count = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True, name=thread_name)
        self._thread.start()

    @abc.abstractmethod
    def _run(self) -> None: ...

    @property
    def busy(self) -> bool:
        return self._open > 0

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, request: Request) -> Request:
        """Queue `request` (`Closed` once `close` was called: nothing queued after the end
        marker would ever run)."""
        done = request.on_done

        def finished() -> None:
            with self._count:
                self._open -= 1
            if done is not None:
                done()

        with self._count:  # the same lock as close: a request is queued before its marker
            if self._closed:
                raise Closed("this model has been unloaded")
            self._open += 1
            request.on_done = finished
            self.inbox.put(request)
        return request

    def close(self, wait: bool = False, timeout: float | None = None) -> None:
        """Stop after the requests already submitted have finished (`wait`: until then, at
        most `timeout` seconds)."""
        with self._count:
            if not self._closed:
                self._closed = True
                self.inbox.put(None)
        if wait:
            self._thread.join(timeout)


class Scheduler(Inbox):
    def __init__(
        self,
        model: Any,
        *,
        lock: threading.Lock | None = None,
        pad_id: int = 0,
        max_batch: int = 16,
        wait_s: float = 0.005,
        name: str = "model",
    ):
        # What to run, read before each forward pass: a model, or an AdapterSet (`.model`, which
        # becomes a peft model when the first adapter loads, and `.mixed`, its fused path).
        self.source = model if hasattr(model, "mixed") else _Fixed(model)
        self.lock = lock or threading.Lock()
        self.pad_id = pad_id
        self.max_batch = max(1, max_batch)
        self.wait_s = max(0.0, wait_s)
        self.largest_batch = 0  # the most rows one step has run (observability, tests)
        self.steps = 0
        self._start(f"generate-{name}")

    # -- the loop ---------------------------------------------------------------------------------

    def _collect(self, room: int, block: bool) -> tuple[list[Request], bool]:
        """Waiting requests (at most `room`), and whether the close marker came."""
        got: list[Request] = []
        closing = False
        deadline = None
        while len(got) < room and not closing:
            try:
                if block and not got:
                    item = self.inbox.get()
                    deadline = time.monotonic() + self.wait_s
                elif deadline is not None:
                    item = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
                else:
                    item = self.inbox.get_nowait()
            except queue.Empty:
                break
            if item is None:
                closing = True
            else:
                got.append(item)
        return got, closing

    def _advance(self, rows: list[Request], logits: Any) -> None:
        for row, token in zip(rows, pick_all([r.sampler for r in rows], logits), strict=True):
            row.last = token
            piece = row.text.add(token)
            if piece:
                row.emit(piece)
            if row.text.done:
                row.finish()

    def _run(self) -> None:
        import torch

        model = self.source.model
        cache_name = cache_kwarg(model)
        batch = Batch(model, cache_name=cache_name, pad_id=self.pad_id)
        rows: list[Request] = []
        closing = False
        with torch.inference_mode():
            while not (closing and not rows):
                fresh, marker = self._collect(self.max_batch - len(rows), block=not rows)
                closing = closing or marker
                for r in fresh:
                    if r.cancelled.is_set():
                        r.finish()
                fresh = [r for r in fresh if not r.cancelled.is_set()]
                try:
                    if fresh:
                        part = Batch(model, cache_name=cache_name, pad_id=self.pad_id)
                        with self.lock:
                            model, mixed = self.source.model, self.source.mixed
                            ids, names = [r.ids for r in fresh], [r.adapter for r in fresh]
                            logits = part.prefill(model, ids, names, mixed)
                        batch.merge(part)
                        rows += fresh
                        self._advance(fresh, logits)
                    keep = [i for i, r in enumerate(rows) if not r.text.done]
                    for i, r in enumerate(rows):
                        if not r.text.done and r.cancelled.is_set():
                            keep.remove(i)
                            r.finish()
                    batch.select(keep)
                    rows = [rows[i] for i in keep]
                    if rows:
                        self.largest_batch = max(self.largest_batch, len(rows))
                        self.steps += 1
                        with self.lock:
                            model, mixed = self.source.model, self.source.mixed
                            logits = batch.step(model, [r.last for r in rows], mixed)
                        self._advance(rows, logits)
                except Exception as exc:  # every row of the batch gets it; the loop goes on
                    for r in rows + fresh:
                        with contextlib.suppress(Exception):
                            r.finish(exc)
                    batch = Batch(model, cache_name=cache_name, pad_id=self.pad_id)
                    rows = []
