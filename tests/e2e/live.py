"""Helpers of the end-to-end tests: a live tunesmith server on 127.0.0.1 (uvicorn in a thread)
with the tiny model offered as `tiny`; bounded waits."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

KEYS = "proj-a:key-a,proj-b:key-b"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    url: str
    settings: Any
    app: Any
    server: Any
    thread: threading.Thread

    def client(self, key: str = "key-a", **kw: Any) -> Any:
        import openai

        return openai.OpenAI(
            base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60, **kw
        )

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def make_settings(home: Path, tiny: Path, **extra: Any) -> Any:
    from tunesmith.service import ServerSettings

    defaults = {
        "data": {"max_seq_len": 128},
        "batch_size": 1,
        "grad_accum": 2,
        "learning_rate": 5e-3,
        "save_every_steps": 2,
        "eval": {"every_steps": 4},
    }
    return ServerSettings(
        home=home,
        api_keys=KEYS,
        models={"tiny": str(tiny)},
        job_defaults=defaults,
        heartbeat_s=0.5,
        lease_s=5.0,
        **extra,
    )


def start_server(settings: Any) -> Live:
    import uvicorn

    from tunesmith.server import create_app

    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    return Live(f"http://127.0.0.1:{port}", settings, app, server, thread)


def wait_for(predicate: Callable[[], Any], timeout: float = 180, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s")
