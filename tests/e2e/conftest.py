"""Fixtures of the end-to-end tests: a live server and in-process workers (see live.py)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from live import Live, make_settings, start_server


@pytest.fixture
def live(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Live]:
    server = start_server(make_settings(tmp_path / "home", tiny_model_dir))
    yield server
    server.stop()


@pytest.fixture
def worker_thread(live: Live) -> Iterator[Callable[[], Any]]:
    """Start in-process workers (their training runs in child processes)."""
    from tunesmith.worker import Worker

    started: list[tuple[Any, threading.Thread]] = []

    def start() -> Any:
        w = Worker(live.settings)
        t = threading.Thread(target=w.run, kwargs={"poll_s": 0.2}, daemon=True)
        t.start()
        started.append((w, t))
        return w

    yield start
    for w, _ in started:
        w.stop.set()
    for w, t in started:
        t.join(timeout=60)
        w.close()
