"""tunesmith.events: one event shape, a log that survives a cut line, a follower that sees
events as they are written."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tunesmith import events
from tunesmith.events import Event, EventLog, fan_out, follow, read_events


def test_event_round_trips_through_a_dict() -> None:
    e = Event("metrics", phase="train", step=3, total=10, data={"loss": 1.5}, level="info")
    back = Event.from_dict(e.to_dict())
    assert back == e
    assert "message" not in e.to_dict()  # empty fields stay out of the log
    with pytest.raises(ValueError):
        Event.from_dict({"kind": "nonsense"})


def test_log_appends_and_reader_skips_a_line_cut_by_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventLog(path) as log:
        log(events.message("one"))
        log(events.progress("validate", 5, 10))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"kind": "message", "mess')  # a kill mid-line
    got = read_events(path)
    assert [e.kind for e in got] == ["message", "progress"]
    assert got[1].done == 5 and got[1].total == 10
    assert [e.message for e in read_events(path, after=1)] == [""]
    assert read_events(tmp_path / "missing.jsonl") == []


def test_follow_yields_events_while_they_are_written(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    done = threading.Event()
    arrived: list[tuple[str, float]] = []

    def writer() -> None:
        with EventLog(path) as log:
            for i in range(5):
                log(events.message(f"m{i}"))
                time.sleep(0.05)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    for e in follow(path, stop=done.is_set, poll_s=0.01):
        arrived.append((e.message, time.monotonic()))
    thread.join()
    assert [m for m, _ in arrived] == [f"m{i}" for i in range(5)]
    assert arrived[-1][1] - arrived[0][1] > 0.1  # they came one by one, not all at the end


def test_fan_out_and_ignore() -> None:
    a: list[Event] = []
    b: list[Event] = []
    report = fan_out(a.append, None, b.append)
    report(events.message("x"))
    assert len(a) == len(b) == 1
    events.reporter(None)(events.message("nobody listens"))  # no error
