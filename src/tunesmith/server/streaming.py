"""Handing generated pieces from the engine's thread to the event loop, for streamed answers.

The scheduler (inference/scheduler.py) puts every row's new text into the row's sink after each
decode step. A plain `queue.Queue` read from the request would need a worker thread blocked in
`get()` per stream: Starlette runs a sync generator in its thread pool, one hop per chunk, so
8 concurrent streams meant 8 threads waking for every token and contending with the decode
step for the GIL. An `AsyncSink` instead appends under a lock and wakes the event loop at most
once per burst (`call_soon_threadsafe`); the response's async generator takes everything that
has arrived since. No thread waits for a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from tunesmith.inference.completion import Completion


class AsyncSink:
    """A sink the engine's thread `put`s into and one coroutine `take`s from."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._items: deque[tuple[Any, Any]] = deque()
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._woken = False  # a wake-up is scheduled and not yet taken

    def put(self, item: tuple[Any, Any]) -> None:
        """From any thread: queue `item`, and wake the reader unless a wake-up is pending."""
        with self._lock:
            self._items.append(item)
            if self._woken:
                return
            self._woken = True
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody reads any more
            self._loop.call_soon_threadsafe(self._ready.set)

    async def take(self) -> list[tuple[Any, Any]]:
        """Everything queued so far, waiting until there is at least one item."""
        while True:
            with self._lock:
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    self._woken = False
                    self._ready.clear()
                    return items
            await self._ready.wait()
            self._ready.clear()


async def aresults(sink: AsyncSink, count: int) -> AsyncIterator[tuple[Any, str | Completion]]:
    """The async twin of `scheduler.results`: `(tag, piece or Completion)` until `count`
    requests have completed; an error that ended a request is raised here."""
    left = count
    while left:
        for tag, item in await sink.take():
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Completion):
                left -= 1
            yield tag, item
            if not left:  # anything after the last completion is not ours to read
                return
