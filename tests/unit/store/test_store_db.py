"""Opening the store: URLs, SQLite's settings, transactions, and surviving kill -9."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text

from tunesmith.errors import TunesmithError
from tunesmith.store import Store, default_url, repo
from tunesmith.store.db import sqlalchemy_url
from tunesmith.store.schema import EventRow, FileRow

CHILD = Path(__file__).with_name("store_child.py")


def test_default_url_is_a_sqlite_file_in_the_home(tmp_path: Path) -> None:
    url = default_url(tmp_path / "home")
    assert url == f"sqlite:///{tmp_path}/home/tunesmith.db"
    store = Store(url)  # creates the home folder
    try:
        assert store.dialect == "sqlite"
        assert (tmp_path / "home" / "tunesmith.db").is_file()
    finally:
        store.close()


def test_postgresql_urls_use_psycopg_3() -> None:
    for url in ("postgresql://u:secret@h:5/db", "postgres://u:secret@h:5/db"):
        parsed = sqlalchemy_url(url)
        assert parsed.drivername == "postgresql+psycopg"
        assert parsed.database == "db"
    assert sqlalchemy_url("postgresql+psycopg://h/db").drivername == "postgresql+psycopg"


def test_bad_and_unreachable_urls_are_user_errors() -> None:
    import socket

    with pytest.raises(TunesmithError, match="not a database URL"):
        Store("not a url")
    with pytest.raises(TunesmithError, match="unsupported database"):
        Store("mysql://h/db")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TunesmithError, match="cannot open the job store") as info:
        Store(f"postgresql://u:hunter2@127.0.0.1:{port}/db?connect_timeout=5")
    assert "hunter2" not in str(info.value)


def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    try:
        with store.engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }
        assert pragma == {
            "journal_mode": "wal",
            "foreign_keys": 1,
            "busy_timeout": 30000,
            "synchronous": 2,
        }
    finally:
        store.close()


def test_sqlite_write_sessions_take_the_write_lock_up_front(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    seen: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda c, cur, stmt, *a: seen.append(stmt))
    try:
        with store.session() as s:
            s.execute(text("SELECT 1"))
        with store.session(write=False) as s:
            s.execute(text("SELECT 1"))
        begins = [stmt for stmt in seen if stmt.startswith("BEGIN")]
        assert begins == ["BEGIN IMMEDIATE", "BEGIN DEFERRED"]
    finally:
        store.close()


def test_a_session_commits_on_success_and_rolls_back_on_error(store: Store) -> None:
    kept = repo.create_job(store, "p", model="m", training_file="file-1")
    with pytest.raises(RuntimeError), store.session() as s:
        s.add(
            EventRow(
                id="ftevent-x",
                job_id=kept.id,
                seq=99,
                created_at=0,
                level="info",
                message="m",
                type="message",
                data=None,
            )
        )
        s.flush()
        raise RuntimeError("boom")
    with store.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(EventRow)) == 0
    assert repo.get_job(store, "p", kept.id) is not None


def test_records_are_frozen_snapshots(store: Store) -> None:
    job = repo.create_job(store, "p", model="m", training_file="file-1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.status = "running"  # type: ignore[misc]
    job.metadata["x"] = "y"  # a copy: the store does not see it
    assert repo.get_job(store, "p", job.id).metadata == {}


def test_kill_9_in_a_write_loop_loses_no_committed_row(store_url: str) -> None:
    """A writer killed with SIGKILL mid-loop: the store opens again (SQLite recovers from its
    WAL) and holds every row whose commit the writer had reported."""
    store = Store(store_url)
    job = repo.create_job(store, "p", model="m", training_file="file-1")
    store.close()
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), "write", store_url, job.id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    committed: dict[str, list[str]] = {"event": [], "file": []}
    deadline = time.monotonic() + 60
    try:
        assert proc.stdout is not None
        while len(committed["file"]) < 40 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            kind, ident = line.split()
            committed[kind].append(ident)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len(committed["file"]) >= 40, proc.stderr.read() if proc.stderr else ""

    store = Store(store_url)
    try:
        if store.dialect == "sqlite":
            with store.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        with store.session(write=False) as s:
            events = set(s.scalars(select(EventRow.id).where(EventRow.job_id == job.id)))
            files = set(s.scalars(select(FileRow.id)))
        assert set(committed["event"]) <= events
        assert set(committed["file"]) <= files
        # the counter and the rows agree, and the store still takes writes
        seqs = [e.seq for e in repo.events_since(store, job.id, 0)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert repo.add_events(store, job.id, [{"message": "after"}])[0].seq == len(seqs) + 1
    finally:
        store.close()


def test_sqlite_readers_are_not_blocked_by_a_writer(tmp_path: Path) -> None:
    """WAL: while one session holds the write lock, reads answer at once (from a snapshot)."""
    import threading

    store = Store(f"sqlite:///{tmp_path}/s.db")
    job = repo.create_job(store, "p", model="m", training_file="file-1")
    holding, done = threading.Event(), threading.Event()

    def writer() -> None:
        with store.session() as s:
            s.execute(text("UPDATE jobs SET trained_tokens = 1"))
            holding.set()
            done.wait(timeout=30)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert holding.wait(timeout=30)
        started = time.monotonic()
        assert repo.get_job(store, "p", job.id).trained_tokens is None  # not yet committed
        assert time.monotonic() - started < 2
    finally:
        done.set()
        t.join(timeout=30)
        store.close()
    assert not t.is_alive()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_opens_its_own_connections(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    try:
        repo.create_job(store, "p", model="m", training_file="file-1")
        assert store.engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
        pid = os.fork()
        if pid == 0:  # the child: a fresh pool, and the store works
            code = 1
            try:
                fresh = store.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
                repo.create_job(store, "p", model="m", training_file="file-2")
                code = 0 if fresh else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert len(repo.list_jobs(store, "p")[0]) == 2
    finally:
        store.close()
