"""Migrations: a fresh database reaches head and matches the models; opening it again runs
no DDL; two processes opening a fresh database at once both succeed; a database from a newer
tunesmith is refused with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event, inspect, text

from tunesmith.errors import TunesmithError
from tunesmith.store import Store, repo
from tunesmith.store.db import MIGRATIONS
from tunesmith.store.schema import Base

CHILD = Path(__file__).with_name("store_child.py")
HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()


def _revision(store: Store) -> str | None:
    with store.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_a_fresh_database_reaches_head_and_matches_the_models(store: Store) -> None:
    assert HEAD is not None and _revision(store) == HEAD
    tables = set(inspect(store.engine).get_table_names())
    assert {"files", "jobs", "events", "checkpoints", "alembic_version"} <= tables
    with store.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []


def test_opening_an_existing_database_again_is_a_no_op(store_url: str) -> None:
    first = Store(store_url)
    job = repo.create_job(first, "a", model="m", training_file="file-1")
    first.close()
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        second = Store(store_url)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    try:
        ddl = [
            s
            for s in statements
            if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP", "INSERT", "UPDATE"))
        ]
        assert ddl == []
        assert _revision(second) == HEAD
        assert repo.get_job(second, "a", job.id) == job
    finally:
        second.close()


def test_two_processes_opening_a_fresh_database_at_once_both_succeed(store_url: str) -> None:
    procs = [
        subprocess.Popen([sys.executable, str(CHILD), "open", store_url], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert all(out.strip() == "ok" for out, _ in outs)
    store = Store(store_url)
    try:
        assert _revision(store) == HEAD
    finally:
        store.close()


def test_a_database_from_a_newer_tunesmith_is_refused_clearly(store_url: str) -> None:
    store = Store(store_url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    store.close()
    with pytest.raises(TunesmithError, match="does not know") as info:
        Store(store_url)
    assert info.value.code == "store_too_new"
