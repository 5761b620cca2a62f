"""Exports of a succeeded job's model (merged safetensors, or GGUF + Ollama Modelfile) as
background tasks of the server, each with a status a client polls and one file to download.

Why a child process (server/export_task.py, which calls `tunesmith.api.export_model`): an
export merges the adapter into a full float32 copy of the base model and writes it out, which
takes memory and minutes; in its own process that memory goes back when it ends, a crash takes
nothing else down, and the serving engine's models are not loaded beside it in one process
(transformers' model building is process-wide state: inference/loading.py).

Layout, all names ours: `$TUNESMITH_HOME/jobs/JOB/exports/EXPORT_ID/` holds `state.json`
(written by the server: status, times, heartbeat), `request.json` (what the child exports),
`progress.json` and `result.json` (written by the child), `out/` (the export itself) and, for
the merged model, the zip offered for download. Nothing a request says reaches a path or a
command line: the format is one of ours, ids are generated, and an export named in a URL is
found by comparing ids, never by joining the URL's text onto a path.

Bounded: one export per job and format — a second request returns the one already there
(queued, running or done); a failed one is replaced by a new attempt. At most `MAX_RUNNING`
exports run at once in this server (the others wait as `queued`), each for at most
`TIMEOUT_S`. A queued or running export whose server stopped heartbeating it (a restart, a
kill -9) reads as failed, so a new request can start again.
"""

from __future__ import annotations

import fcntl
import logging
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tunesmith.io import atomic_write_json, read_json

log = logging.getLogger("tunesmith.server")

FORMATS = {"hf": "merged safetensors (zip)", "gguf": "GGUF + Ollama Modelfile"}
ACTIVE = ("queued", "running")
MAX_RUNNING = 1
TIMEOUT_S = 4 * 3600.0
HEARTBEAT_S = 2.0
STALE_S = 60.0  # no heartbeat for this long: the server that ran it is gone
POLL_S = 0.5


def new_export_id() -> str:
    return "ftexport-" + secrets.token_hex(12)


def die_with_parent() -> None:  # runs in the child before exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Exports:
    """The exports of one server process (app.state.exports)."""

    def __init__(self, settings: Any):
        self.settings = settings
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(MAX_RUNNING)
        self.stop = threading.Event()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.threads: list[threading.Thread] = []

    # -- where things are ----------------------------------------------------------------------

    def root(self, job: Any) -> Path:
        return Path(self.settings.jobs_dir) / job.id / "exports"

    def _dirs(self, job: Any) -> Iterator[Path]:
        root = self.root(job)
        if root.is_dir():
            for d in sorted(root.iterdir()):
                if d.is_dir() and d.name.startswith("ftexport-"):
                    yield d

    @contextmanager
    def _locked(self, job: Any) -> Iterator[None]:
        """This process's lock, then a file lock: two server processes sharing a home do not
        start the same export twice either."""
        with self.lock:
            root = self.root(job)
            root.mkdir(parents=True, exist_ok=True)
            with open(root / ".lock", "a+b") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)

    # -- reading -------------------------------------------------------------------------------

    def _state(self, work: Path) -> dict[str, Any] | None:
        """An export's state, with a gone server's queued/running export marked failed."""
        state = _read(work / "state.json")
        if state is None:
            return None
        alive = state["id"] in self.procs or any(
            t.name == state["id"] and t.is_alive() for t in self.threads
        )
        beat = float(state.get("heartbeat_at") or state.get("created_at") or 0)
        if state.get("status") in ACTIVE and not alive and time.time() - beat > STALE_S:
            state.update(
                status="failed",
                finished_at=int(time.time()),
                error={
                    "code": "export_interrupted",
                    "message": "the server stopped while exporting; ask for the export again",
                },
            )
            atomic_write_json(work / "state.json", state)
        return state

    def _public(self, work: Path, state: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in state.items() if k != "heartbeat_at"}
        if isinstance(out.get("download"), dict):  # where it lies is ours
            out["download"] = {k: v for k, v in out["download"].items() if k != "path"}
        progress = _read(work / "progress.json") if state.get("status") == "running" else None
        if state.get("status") == "succeeded":
            out["progress"] = {"percent": 100, "message": "done"}
        elif progress is not None:
            out["progress"] = progress
        return out

    def list(self, job: Any) -> list[dict[str, Any]]:
        out = []
        for work in self._dirs(job):
            state = self._state(work)
            if state is not None:
                out.append(self._public(work, state))
        out.sort(key=lambda s: (s.get("created_at") or 0, s["id"]))
        return out

    def _find(self, job: Any, export_id: str) -> tuple[Path, dict[str, Any]] | None:
        for work in self._dirs(job):
            state = self._state(work)
            if state is not None and state.get("id") == export_id:
                return work, state
        return None

    def get(self, job: Any, export_id: str) -> dict[str, Any] | None:
        found = self._find(job, export_id)
        return self._public(*found) if found else None

    def download(self, job: Any, export_id: str, name: str | None) -> tuple[Path, str] | None:
        """(path, download name) of a succeeded export's main file (the GGUF, or the merged
        model's zip), or of one of its files by the name the export lists; None otherwise."""
        found = self._find(job, export_id)
        if found is None:
            return None
        work, state = found
        if state.get("status") != "succeeded":
            return None
        main = state.get("download") or {}
        if name is None or name == main.get("name"):
            path = work / str(main.get("path", ""))
            return (path, str(main["name"])) if main.get("name") and path.is_file() else None
        for listed in state.get("files") or []:
            if listed.get("name") == name:  # a name the export wrote, never the request's
                path = work / "out" / str(listed["name"])
                return (path, str(listed["name"])) if path.is_file() else None
        return None

    # -- starting and running ------------------------------------------------------------------

    def start(self, job: Any, fmt: str) -> dict[str, Any]:
        """The job's export in `fmt`: the existing one unless it failed, else a new one."""
        with self._locked(job):
            failed = []
            for work in self._dirs(job):
                state = self._state(work)
                if state is None or state.get("format") != fmt:
                    continue
                if state.get("status") == "failed":
                    failed.append(work)
                else:
                    return self._public(work, state)
            for work in failed:  # bounded: only the newest attempt of a format is kept
                shutil.rmtree(work, ignore_errors=True)
            export_id = new_export_id()
            work = self.root(job) / export_id
            work.mkdir(parents=True)
            name = (job.fine_tuned_model or job.id).replace(":", "-")
            atomic_write_json(
                work / "request.json",
                {"source": str(job.run_dir), "format": fmt, "name": name},
            )
            now = time.time()
            state = {
                "id": export_id,
                "object": "fine_tuning.job.export",
                "fine_tuning_job_id": job.id,
                "format": fmt,
                "description": FORMATS[fmt],
                "status": "queued",
                "created_at": int(now),
                "started_at": None,
                "finished_at": None,
                "error": None,
                "download": None,
                "files": [],
                "heartbeat_at": now,
            }
            atomic_write_json(work / "state.json", state)
            thread = threading.Thread(
                target=self._run, args=(job, work, dict(state)), name=export_id, daemon=True
            )
            self.threads = [t for t in self.threads if t.is_alive()] + [thread]
            thread.start()
            return self._public(work, state)

    def _save(self, work: Path, state: dict[str, Any], **changes: Any) -> None:
        state.update(changes, heartbeat_at=time.time())
        atomic_write_json(work / "state.json", state)

    def _run(self, job: Any, work: Path, state: dict[str, Any]) -> None:
        try:
            while not self.slots.acquire(timeout=HEARTBEAT_S):
                if self.stop.is_set():
                    return
                self._save(work, state)
            try:
                if not self.stop.is_set():
                    self._export(job, work, state)
            finally:
                self.slots.release()
        except Exception:  # a bug of ours: the export fails, the server goes on
            log.exception("export %s failed", state["id"])
            error = {"code": "export_failed", "message": "the export failed (internal error)"}
            self._save(work, state, status="failed", finished_at=int(time.time()), error=error)

    def _export(self, job: Any, work: Path, state: dict[str, Any]) -> None:
        self._save(work, state, status="running", started_at=int(time.time()))
        command = [sys.executable, "-m", "tunesmith.server.export_task", str(work)]
        with open(work / "export.log", "wb") as logfile:
            child = subprocess.Popen(  # our interpreter and our directory; no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
            self.procs[state["id"]] = child
            started, code = time.monotonic(), None
            try:
                while code is None:
                    try:
                        code = child.wait(timeout=HEARTBEAT_S)
                    except subprocess.TimeoutExpired:
                        if self.stop.is_set() or time.monotonic() - started > TIMEOUT_S:
                            child.kill()
                            code = child.wait()
                            break
                        self._save(work, state)
            finally:
                self.procs.pop(state["id"], None)
        result = _read(work / "result.json") or {}
        now = int(time.time())
        if code == 0 and result.get("ok"):
            self._save(
                work,
                state,
                status="succeeded",
                finished_at=now,
                **{k: v for k, v in result.items() if k != "ok"},
            )
            return
        if result.get("error"):
            error = {
                "code": str(result["error"].get("code") or "export_failed"),
                "message": self._public_text(job, work, str(result["error"].get("message"))),
            }
        elif self.stop.is_set():
            error = {"code": "export_interrupted", "message": "the server stopped while exporting"}
        elif time.monotonic() - started > TIMEOUT_S:
            error = {"code": "export_timeout", "message": f"took longer than {TIMEOUT_S:.0f} s"}
        else:
            log.error("export %s: child exited with %s (see %s)", state["id"], code, work)
            error = {"code": "export_failed", "message": f"the export process exited with {code}"}
        self._save(work, state, status="failed", finished_at=now, error=error)

    def _public_text(self, job: Any, work: Path, text: str) -> str:
        """A message of the child's as the job's owner may read it: no server paths."""
        from tunesmith.server.filecheck import scrubber

        pairs = [(str(work), "EXPORT"), (str(self.settings.home), "$TUNESMITH_HOME")]
        if job.run_dir:
            pairs.append((str(job.run_dir), job.id))
        for public, target in self.settings.models.items():
            pairs.append((str(target), public))
        return str(scrubber(pairs)(text))

    # -- deleting and stopping -----------------------------------------------------------------

    def delete(self, job: Any, export_id: str) -> dict[str, Any] | bool | None:
        """Remove a finished export (its files too): the state it had, None when there is no
        such export, False while it is still queued or running."""
        with self._locked(job):
            found = self._find(job, export_id)
            if found is None:
                return None
            work, state = found
            if state.get("status") in ACTIVE:
                return False
            shutil.rmtree(work, ignore_errors=True)
            return state

    def close(self) -> None:
        """Stop: running children are killed (their exports read as interrupted)."""
        self.stop.set()
        for child in list(self.procs.values()):
            with suppress(OSError):
                child.kill()
        for thread in self.threads:
            thread.join(timeout=10)
