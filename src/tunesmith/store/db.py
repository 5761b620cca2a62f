"""Opening the job store: one engine per process, tuned per backend, migrated on open.

SQLite (the default, a file under TUNESMITH_HOME) runs in WAL mode with `synchronous=FULL`, so
a commit is on disk before it returns and a process killed with SIGKILL at any moment leaves a
database that opens with every committed row (SQLite's journal does the recovery). Readers do
not block the writer in WAL; writers queue on SQLite's one write lock for up to 30 s
(busy_timeout) instead of failing at once.

Transactions on SQLite are opened by us, not by Python's sqlite3 module (which defers BEGIN to
the first write and so lets two read-then-write transactions deadlock on the upgrade): a write
session starts with `BEGIN IMMEDIATE`, taking the write lock up front, so its reads and writes
are one atomic step; a read session starts with a plain `BEGIN` (a snapshot, no lock).

PostgreSQL (`postgresql://…`, psycopg 3) uses its default READ COMMITTED; the repo's writes
are single-row compare-and-set UPDATEs and the queue locks with `FOR UPDATE SKIP LOCKED`.

Migrations (Alembic, shipped in `store/migrations/`, no alembic.ini) run when a Store opens:
serialised by the SQLite write lock or a PostgreSQL advisory lock, so a server and its workers
opening a fresh database at the same moment migrate it once.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session

from tunesmith.errors import TunesmithError

MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock key for migrations: any constant, the same in every process.
_MIGRATE_LOCK = 0x7475_6E65  # "tune"
_BEGIN_OPTION = "tunesmith_sqlite_begin"


def default_url(home: Path) -> str:
    """The embedded store: a SQLite file in the tunesmith home."""
    return f"sqlite:///{home}/tunesmith.db"


def sqlalchemy_url(url: str) -> URL:
    """`postgresql://` and `postgres://` mean psycopg 3 (SQLAlchemy's default would be
    psycopg2, which we do not ship)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise TunesmithError(
            "the store URL is not a database URL",
            hint="use sqlite:///PATH or postgresql://USER@HOST:PORT/DB",
            code="invalid_store_url",
        ) from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


class Store:
    """The job store: an engine plus `session()`. Functions in `repo` and `queue` take it."""

    def __init__(self, url: str, *, migrate: bool = True):
        self.url = url
        sa_url = sqlalchemy_url(url)
        self.dialect = sa_url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise TunesmithError(
                f"unsupported database {self.dialect!r}: use SQLite or PostgreSQL",
                code="invalid_store_url",
            )
        self.safe_url = sa_url.render_as_string(hide_password=True)
        try:
            self.engine = _sqlite_engine(sa_url) if self.dialect == "sqlite" else _pg_engine(sa_url)
        except ModuleNotFoundError as exc:
            raise TunesmithError(
                f"the PostgreSQL driver is not installed ({exc.name})",
                hint="pip install 'tunesmith[postgres]'",
                code="store_unavailable",
            ) from exc
        self._read_engine = self.engine.execution_options(**{_BEGIN_OPTION: "DEFERRED"})
        # A forked child (a worker started by the server) must not share the parent's pooled
        # connections: it opens its own on first use.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_pool(ref))
        if migrate:
            try:
                self._migrate_when_unlocked()
            except OperationalError as exc:
                self.engine.dispose()
                raise TunesmithError(
                    f"cannot open the job store at {self.safe_url}: {exc.orig}",
                    code="store_unavailable",
                ) from exc

    def __repr__(self) -> str:
        return f"Store({self.safe_url!r})"

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises.

        `write=False` is for read-only work: on SQLite it takes no write lock (a snapshot read);
        on PostgreSQL it changes nothing."""
        bind = self.engine if write else self._read_engine
        with Session(bind, expire_on_commit=False, autoflush=True) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def now(self, session: Session) -> float:
        """The clock leases are measured by: PostgreSQL's (workers on several machines agree
        on it whatever their own clocks say), the local one for SQLite (one machine)."""
        if self.dialect == "postgresql":
            return float(
                session.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
            )
        return time.time()

    def _migrate_when_unlocked(self, wait_s: float = 30.0) -> None:
        """`migrate`, again while SQLite answers "database is locked" (up to `wait_s`): two
        processes opening a fresh file at once race for its first write (switching it to WAL,
        creating the tables), and SQLite reports some of those collisions at once instead of
        waiting out busy_timeout. Migrating is idempotent, so the loser just tries again."""
        deadline = time.monotonic() + wait_s
        pause = 0.05
        while True:
            try:
                self.migrate()
                return
            except OperationalError as exc:
                locked = self.dialect == "sqlite" and "locked" in str(exc.orig)
                if not locked or time.monotonic() + pause > deadline:
                    raise
                self.engine.dispose()  # a connection that failed mid-setup is not reused
                time.sleep(pause)
                pause = min(1.0, pause * 2)

    def migrate(self) -> None:
        """Bring the schema to the newest revision (a no-op when it is there already: then no
        lock is taken and nothing is written)."""
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        head = ScriptDirectory.from_config(config).get_current_head()
        with self._read_engine.connect() as conn:  # a snapshot read: no lock
            if MigrationContext.configure(conn).get_current_revision() == head:
                conn.rollback()
                return
            conn.rollback()
        with self.engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE, the write lock
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK})
            config.attributes["connection"] = conn
            try:
                command.upgrade(config, "head")
            except CommandError as exc:
                raise TunesmithError(
                    f"the job store at {self.safe_url} has a schema this tunesmith does not "
                    f"know ({exc})",
                    hint="it was written by a newer tunesmith: upgrade this one",
                    code="store_too_new",
                ) from exc

    def close(self) -> None:
        """Close every pooled connection (the Store must not be used afterwards)."""
        self.engine.dispose()


def _forget_pool(ref: weakref.ref[Store]) -> None:
    store = ref()
    if store is not None:
        store.engine.dispose(close=False)


def _sqlite_engine(url: URL) -> Engine:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _pg_engine(url: URL) -> Engine:
    # pre-ping: a server restart (or a dropped idle connection) costs one retry, not an error;
    # a host that does not answer fails in 10 s (unless the URL says otherwise), not in minutes.
    args = {} if "connect_timeout" in url.query else {"connect_timeout": 10}
    return create_engine(url, pool_pre_ping=True, connect_args=args)
