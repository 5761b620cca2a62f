"""The models a server keeps in memory: loaded on demand, least recently used out first.

Each entry is a `LoadedModel` with a lock: one generation at a time per model (a CPU gains
nothing from two at once). Pinned names are never evicted. Loading happens outside the pool's
lock, so one slow load does not stall requests for models already in memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from tunesmith.models.load import LoadedModel, load_model


@dataclass
class Entry:
    model: LoadedModel
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelPool:
    def __init__(self, capacity: int = 4, pinned: set[str] | None = None, **load_kwargs: Any):
        self.capacity = max(1, capacity)
        self.pinned = set(pinned or ())
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._load_kwargs = load_kwargs

    def __contains__(self, target: str) -> bool:
        return target in self._entries

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, target: str) -> Entry:
        """The loaded model for `target` (a registry name, model dir, run dir, RUN@step-N)."""
        with self._lock:
            entry = self._entries.get(target)
            if entry is not None:
                self._entries.move_to_end(target)
                return entry
            gate = self._loading.setdefault(target, threading.Lock())
        with gate:  # one load per target, however many requests wait for it
            with self._lock:
                entry = self._entries.get(target)
            if entry is None:
                entry = Entry(load_model(target, **self._load_kwargs))
                with self._lock:
                    self._entries[target] = entry
                    self._evict()
            with self._lock:
                self._loading.pop(target, None)
                self._entries.move_to_end(target)
            return entry

    def drop(self, target: str) -> None:
        with self._lock:
            self._entries.pop(target, None)

    def _evict(self) -> None:
        while len(self._entries) > self.capacity:
            victim = next((k for k in self._entries if k not in self.pinned), None)
            if victim is None:
                return
            del self._entries[victim]
