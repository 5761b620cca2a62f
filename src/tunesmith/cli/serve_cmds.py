"""`tunesmith serve` (the OpenAI-compatible API, optionally with local workers) and
`tunesmith worker` (runs queued jobs; point it at the server's PostgreSQL from any machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import typer

from tunesmith.cli.app import app, err_console


def _settings(db: str | None, home: Path | None) -> object:
    from tunesmith.service import ServerSettings

    overrides: dict[str, object] = {}
    if db:
        overrides["db"] = db
    if home:
        overrides["home"] = home
    return ServerSettings(**overrides)  # type: ignore[arg-type]


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=1, max=65535),
    db: str | None = typer.Option(None, help="Database URL (default: SQLite under the home)."),
    home: Path | None = typer.Option(None, help="Data root (default: $TUNESMITH_HOME)."),
    workers: int = typer.Option(0, min=0, max=64, help="Local workers to start beside it."),
) -> None:
    """Serve the files, fine-tuning, models and chat-completions API."""
    from tunesmith.service import openmp_env

    settings = _settings(db, home)
    # The workers train: they keep the environment as it was (OpenMP as the user set it).
    env = {**os.environ, "TUNESMITH_HOME": str(settings.home)}  # type: ignore[attr-defined]
    # OpenMP for decoding, before torch loads:
    os.environ.update(openmp_env(settings.serve_engine))  # type: ignore[attr-defined]
    import uvicorn

    from tunesmith.server import create_app

    application = create_app(settings)  # type: ignore[arg-type]
    children = []
    for _ in range(workers):
        cmd = [sys.executable, "-m", "tunesmith.cli", "worker", "--db", settings.db_url]  # type: ignore[attr-defined]
        children.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL))
    keys = "on" if application.state.keys else "off (set TUNESMITH_API_KEYS to require keys)"
    err_console.print(
        f"tunesmith API on http://{host}:{port}/v1  store: {application.state.store.dialect}  "
        f"api keys: {keys}  workers: {workers}",
        highlight=False,
    )
    try:
        uvicorn.run(application, host=host, port=port, log_level="warning")
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()


@app.command()
def worker(
    db: str | None = typer.Option(None, help="Database URL the server uses."),
    home: Path | None = typer.Option(None, help="Data root (files and runs; shared storage)."),
    once: bool = typer.Option(False, help="Run at most one job, then exit."),
) -> None:
    """Run queued fine-tuning jobs (Ctrl-C / SIGTERM: the running job is checkpointed and
    handed back to the queue)."""
    from tunesmith.worker import Worker

    w = Worker(_settings(db, home))  # type: ignore[arg-type]

    def _stop(signum: int, frame: object) -> None:
        w.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    err_console.print(f"worker {w.id} on {w.store.dialect}", highlight=False)
    try:
        w.run(max_jobs=1 if once else None)
    finally:
        w.close()
