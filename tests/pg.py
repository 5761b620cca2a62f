"""A throwaway PostgreSQL cluster for the tests: initdb in a temp folder, listening only on
127.0.0.1 (a free port) with its unix socket inside that folder, stopped and removed at the
end. Nothing of the machine's own PostgreSQL (service, data, config) is touched.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user
(Debian's package creates it) or `nobody`, and its folder is chown'ed to that user. Every wait
is bounded. `Unavailable` says why a cluster could not be had (the tests then skip).

`TUNESMITH_TEST_PG_URL=postgresql://user@host:port/db` uses an existing server instead (the
user must be allowed to CREATE DATABASE).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT_S = 30


class Unavailable(RuntimeError):
    """PostgreSQL cannot be had here (the reason is the message)."""


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl live: PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")],
    )
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    """The user to run PostgreSQL as (None: ourselves, when not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise Unavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


class Cluster:
    """A running throwaway cluster; `admin_url` reaches its `postgres` database."""

    def __init__(self, root: Path | None, bindir: Path | None, user: str | None, url: str):
        self.root, self.bindir, self.user = root, bindir, user
        self.admin_url = url
        self._stopped = False

    def url_for(self, database: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        conninfo = self.admin_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, name: str) -> str:
        assert name.replace("_", "").isalnum(), name
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        assert name.replace("_", "").isalnum(), name
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.contextmanager
    def fresh_database(self) -> Iterator[str]:
        """A new empty database for one test, dropped afterwards (its connections cut)."""
        name = f"t_{secrets.token_hex(6)}"
        url = self.create_database(name)
        try:
            yield url
        finally:
            self.drop_database(name)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.root is None or self.bindir is None:
            return
        try:
            _pg(
                self,
                "pg_ctl",
                "-D",
                str(self.root / "data"),
                "stop",
                "-m",
                "immediate",
                "-w",
                "-t",
                "30",
                timeout=60,
            )
        except (subprocess.SubprocessError, OSError):
            pass
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _pg(cluster: Cluster, tool: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    assert cluster.bindir is not None and cluster.root is not None
    return subprocess.run(
        [str(cluster.bindir / tool), *args],
        cwd=cluster.root,
        user=cluster.user,
        group=(pwd.getpwnam(cluster.user).pw_gid if cluster.user else None),
        extra_groups=[] if cluster.user else None,
        env={**os.environ, "LC_ALL": "C", "HOME": str(cluster.root)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


def start() -> Cluster:
    """Start a throwaway cluster (or reach TUNESMITH_TEST_PG_URL); raises Unavailable."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise Unavailable(
            "the psycopg driver is not installed (pip install 'psycopg[binary]')"
        ) from exc
    external = os.environ.get("TUNESMITH_TEST_PG_URL")
    if external:
        cluster = Cluster(None, None, None, external)
        try:
            cluster._admin("SELECT 1")
        except Exception as exc:
            raise Unavailable(f"TUNESMITH_TEST_PG_URL cannot be reached: {exc}") from exc
        return cluster
    bindir = find_bindir()
    if bindir is None:
        raise Unavailable("initdb/pg_ctl not found (make postgres installs Debian's postgresql)")
    user = _run_as()
    # As another user, under /tmp: $TMPDIR may be a folder only root can enter.
    where = "/tmp" if user is not None and os.path.isdir("/tmp") else None
    root = Path(tempfile.mkdtemp(prefix="tunesmith-pg-", dir=where))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    (root / "sock").mkdir()
    if user is not None:
        os.chown(root / "sock", entry.pw_uid, entry.pw_gid)
    cluster = Cluster(root, bindir, user, "")
    try:
        _pg(
            cluster,
            "initdb",
            "-D",
            str(root / "data"),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            timeout=120,
        )
        last = ""
        for _ in range(3):  # a free port may be taken between the probe and the start
            port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {root / 'sock'} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200 -c shared_buffers=32MB"
            )
            try:
                _pg(
                    cluster,
                    "pg_ctl",
                    "-D",
                    str(root / "data"),
                    "-l",
                    str(root / "log"),
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                    "-o",
                    options,
                    "start",
                    timeout=START_TIMEOUT_S + 10,
                )
            except subprocess.CalledProcessError as exc:
                log = (root / "log").read_text(errors="replace") if (root / "log").exists() else ""
                last = (exc.stderr or "") + log[-2000:]
                continue
            cluster.admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            atexit.register(cluster.stop)  # also when the session ends without its teardown
            cluster._admin("SELECT 1")
            return cluster
        raise Unavailable(f"the cluster did not start: {last.strip()[-1500:]}")
    except BaseException as exc:
        cluster.stop()
        if isinstance(exc, subprocess.CalledProcessError):
            out = (exc.stderr or exc.stdout or "").strip()[-1500:]
            raise Unavailable(f"{Path(str(exc.cmd[0])).name} failed: {out}") from exc
        if isinstance(exc, subprocess.TimeoutExpired):
            name = Path(str(exc.cmd[0])).name
            raise Unavailable(f"{name} did not finish in {exc.timeout:.0f}s") from exc
        raise
