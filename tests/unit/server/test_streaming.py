"""server/streaming.py: pieces cross from the engine's thread to the event loop in order, one
wake-up per burst, errors raised at the reader; streamed answers over a live server equal the
plain ones, and a client that walks away frees the engine."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tunesmith.inference.completion import Completion
from tunesmith.server.streaming import AsyncSink, aresults

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))


def _completion(text: str = "done") -> Completion:
    return Completion(text=text, finish_reason="stop", prompt_tokens=1, completion_tokens=1)


def test_pieces_from_another_thread_arrive_in_order_until_every_request_completed() -> None:
    async def main() -> list[tuple[Any, Any]]:
        sink = AsyncSink()

        def engine() -> None:
            for k in range(200):
                sink.put((k % 2, f"p{k}"))
            sink.put((0, _completion()))
            sink.put((1, _completion()))
            sink.put((1, "after the end"))  # never read: both requests had completed

        threading.Thread(target=engine).start()
        return [item async for item in aresults(sink, 2)]

    got = asyncio.run(asyncio.wait_for(main(), 10))
    pieces = [item for _, item in got if isinstance(item, str)]
    assert pieces == [f"p{k}" for k in range(200)]
    assert [tag for tag, item in got if isinstance(item, Completion)] == [0, 1]
    assert len(got) == 202


def test_a_burst_wakes_the_loop_once_and_is_taken_whole() -> None:
    async def main() -> tuple[int, list[Any]]:
        loop = asyncio.get_running_loop()
        wakeups = 0
        original = loop.call_soon_threadsafe

        def counting(*args: Any, **kw: Any) -> Any:
            nonlocal wakeups
            wakeups += 1
            return original(*args, **kw)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        sink = AsyncSink()
        t = threading.Thread(target=lambda: [sink.put((0, f"x{i}")) for i in range(50)])
        t.start()
        t.join()
        return wakeups, await sink.take()

    wakeups, items = asyncio.run(main())
    assert wakeups == 1
    assert [item for _, item in items] == [f"x{i}" for i in range(50)]


def test_an_error_that_ended_a_request_is_raised_at_the_reader() -> None:
    async def main() -> list[Any]:
        sink = AsyncSink()
        got: list[Any] = []
        sink.put((0, "partial"))
        sink.put((0, RuntimeError("the engine failed")))
        with pytest.raises(RuntimeError, match="the engine failed"):
            async for item in aresults(sink, 1):
                got.append(item)
        return got

    assert asyncio.run(main()) == [(0, "partial")]


def test_put_after_the_loop_closed_is_harmless() -> None:
    loop = asyncio.new_event_loop()
    sink = AsyncSink(loop)
    loop.close()
    sink.put((0, "late"))  # the server is shutting down: no error in the engine's thread


@pytest.fixture
def live(tmp_path: Path, tiny_model_dir: Path) -> Any:
    from live import make_settings, start_server

    server = start_server(make_settings(tmp_path / "home", tiny_model_dir))
    yield server
    server.stop()


def _sse_texts(response: httpx.Response, field: str) -> dict[int, str]:
    import json

    texts: dict[int, str] = {}
    for line in response.iter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        for choice in json.loads(line[6:])["choices"]:
            piece = choice["delta"].get("content") if field == "delta" else choice["text"]
            texts[choice["index"]] = texts.get(choice["index"], "") + (piece or "")
    return texts


def test_streamed_answers_over_a_live_server_equal_the_plain_ones(live: Any) -> None:
    headers = {"Authorization": "Bearer key-a"}
    chat = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Say something"}],
        "temperature": 0,
        "max_tokens": 12,
        "n": 2,
    }
    completion = {
        "model": "tiny",
        "prompt": ["one two", "three"],
        "temperature": 0,
        "max_tokens": 9,
    }
    with httpx.Client(base_url=live.url + "/v1", headers=headers, timeout=60) as client:
        plain = client.post("/chat/completions", json=chat).json()
        with client.stream("POST", "/chat/completions", json={**chat, "stream": True}) as r:
            assert r.status_code == 200
            streamed = _sse_texts(r, "delta")
        assert streamed == {c["index"]: c["message"]["content"] for c in plain["choices"]}
        assert streamed[0] == streamed[1] and streamed[0]  # greedy: both choices agree
        plain = client.post("/completions", json=completion).json()
        with client.stream("POST", "/completions", json={**completion, "stream": True}) as r:
            assert r.status_code == 200
            streamed = _sse_texts(r, "text")
        assert streamed == {c["index"]: c["text"] for c in plain["choices"]}
        assert len(streamed) == 2


def test_a_client_that_walks_away_from_a_stream_frees_the_engine(
    live: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunesmith.inference.scheduler import Request

    pieces: list[int] = []  # pieces generated for the stream, counted in the engine's thread
    emit = Request.emit

    def counting(self: Request, item: Any) -> None:
        if isinstance(item, str):
            pieces.append(1)
        emit(self, item)

    monkeypatch.setattr(Request, "emit", counting)
    headers = {"Authorization": "Bearer key-a"}
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Talk for a long time"}],
        "max_tokens": 2000,
        "temperature": 0,
        "stream": True,
    }
    with (
        httpx.Client(base_url=live.url + "/v1", headers=headers, timeout=60) as client,
        client.stream("POST", "/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)  # the stream is under way
    pool = live.app.state.pool
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        models = list(pool._models.values())
        if models and not any(m.scheduler.busy for m in models):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the abandoned stream still occupies the engine after 60 s")
    # the row left the batch soon after the client did, far from its 2000 tokens
    assert 0 < len(pieces) < 500, len(pieces)
