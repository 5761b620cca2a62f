"""Which GGUF file llama.cpp serves a target from: the shipped one, or an export made once.

The serving pool (inference/pool.py) asks `GgufCache(target)` before it loads a target; a path
means "serve it through llama.cpp" (inference/llamacpp.py), None means "serve it with torch".
- A base model that is a GGUF (the default model's alias, a .gguf file the operator listed):
  its own file, as it ships.
- A fine-tune (a run, a checkpoint `RUN@step-N`, an adapter or model directory): merged and
  exported once (`python -m tunesmith.server.export_task`, the server's export child, at
  `serve_gguf_quantize`, q8_0 by default) into `$TUNESMITH_HOME/cache/gguf/KEY/`, KEY a digest
  of the weights' file names, sizes and times and of the quantisation. Asking never waits for
  an export: the first ask queues one (one at a time, in the background) and answers None, so
  that request, and every one until the file is there, is served by torch; when the export
  lands, `generation` goes up and the pool moves the target over to llama.cpp at its next
  request. An export is written into a temporary folder and renamed into place under a file
  lock, so two servers sharing a home export it once and nobody reads half a file (the long
  lock of an export is not the short one of renaming, evicting and forgetting: deleting a
  model never waits for another model's export).
- `watch(store)`: a job that succeeds while the server runs is exported right away, so its
  first chat request is usually served by llama.cpp already (looked for in a window of the
  last `WATCH_WINDOW_S`, so workers whose clocks run a little behind are not missed).
- Bounded: exports beyond `max_bytes` are deleted least recently served first (never the one
  just made; the pool reports every request served from an export, `used`; a model llama.cpp
  has open keeps working, the file is mapped), and `forget(target)` deletes a deleted model's
  exports, also one queued or running when it is deleted. Leftovers of a server killed
  mid-export are deleted by the next export.
- Anything the exporter cannot write (an architecture GGUF has no mapping for here, a hub id)
  stays on torch: the reason is logged once, the request is served all the same. An export
  that did not end by itself (killed: out of memory, the time bound) is tried again later
  (`RETRY_AFTER_S`), at most `TRIES` times; the target is served by torch meanwhile.
- The export child runs at a lower CPU priority (`NICE`): requests being served come first.
Which targets get here at all is the operator's `serve_engine` (service.py): `torch` never asks.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.io import atomic_write_json, read_json
from tunesmith.server.exports import die_with_parent

log = logging.getLogger("tunesmith.server")

TIMEOUT_S = 4 * 3600.0  # one export, at most (as the job exports of server/exports.py)
WATCH_S = 5.0  # how often `watch` looks for newly succeeded jobs
WATCH_WINDOW_S = 300  # how far back each look goes (the workers' clocks set finished_at)
TOUCH_S = 60.0  # a served export's last-use time is written at most this often
TRIES = 3  # exports of one target that did not end by themselves, before it stays on torch
RETRY_AFTER_S = (600.0, 3600.0)  # the wait before the 2nd and the 3rd try
NICE = 10  # the export child's niceness: serving first, exporting with what is left


class GgufCache:
    def __init__(
        self,
        home: Path,
        quantize: str = "q8_0",
        *,
        max_bytes: int | None = 20 * 1024**3,
        timeout_s: float = TIMEOUT_S,
        retry_after_s: tuple[float, ...] = RETRY_AFTER_S,
    ):
        self.root = home / "cache" / "gguf"
        self.quantize = quantize
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.generation = 0  # +1 each time an export lands: the pool re-asks torch-served targets
        self._failed: set[str] = set()  # targets that stay on torch (logged once)
        self._pending: dict[str, threading.Event] = {}  # queued or running exports, by target
        self._touched: dict[Path, float] = {}
        self._forgotten: set[str] = set()  # deleted models: not exported, or deleted once made
        self._tries: dict[str, int] = {}  # exports of a target that were killed, so far
        self._retries: dict[str, threading.Timer] = {}  # the next try of each, when it is due
        self._lock = threading.Lock()
        self._jobs: queue.Queue[tuple[str, Path] | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._child: subprocess.Popen[bytes] | None = None

    # -- asking ------------------------------------------------------------------------------------

    def __call__(self, target: str) -> Path | None:
        """The GGUF to serve `target` from now, or None (torch serves it; an export of it is
        queued when it can have one)."""
        found, folder = self._locate(target)
        if found is not None:
            if folder is not None:
                self._touch(folder)
            return found
        if folder is not None:
            self._enqueue(target, folder)
        return None

    def prepare(self, target: str) -> threading.Event:
        """Queue `target`'s export (nothing when it has one, or cannot have one); the event is
        set once it is ready or has failed."""
        found, folder = self._locate(target)
        if found is None and folder is not None:
            return self._enqueue(target, folder)
        done = threading.Event()
        done.set()
        return done

    def wait(self, target: str, timeout: float | None = None) -> Path | None:
        """`prepare`, then wait for it: the GGUF, or None when there is none (yet)."""
        self.prepare(target).wait(timeout)
        return self(target)

    def _locate(self, target: str) -> tuple[Path | None, Path | None]:
        """(the file to serve now, or None; the export folder, or None when nothing is made)."""
        from tunesmith.models.registry import resolve

        if target in self._failed:
            return None, None
        try:
            ref = resolve(target)
        except TunesmithError as exc:
            self._stay(target, exc.message)
            return None, None
        if ref.kind in ("alias", "gguf") and ref.source is not None:
            return ref.source, None
        weights = ref.adapter if ref.kind == "adapter" else ref.path
        if ref.kind == "hub" or weights is None or not weights.is_dir():
            self._stay(target, "not a local model")
            return None, None
        folder = self.root / self.key(target, weights)
        return _gguf_in(folder), folder

    def _stay(self, target: str, why: str) -> None:
        with self._lock:
            if target not in self._failed:
                self._failed.add(target)
                log.info("serving %s with torch, not llama.cpp: %s", target, why)

    def key(self, target: str, weights: Path) -> str:
        """Digest of what the export is made of: the target's weights files (name, size, mtime)
        and the quantisation."""
        h = hashlib.sha256(f"{self.quantize}\n{target}\n".encode())
        for f in sorted(p for p in weights.rglob("*") if p.is_file()):
            st = f.stat()
            h.update(f"{f.relative_to(weights)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:24]

    def used(self, gguf: Path) -> None:
        """A request was served from `gguf` (the pool says so): its export is recent."""
        if gguf.parent.parent.parent == self.root:  # ROOT/KEY/out/FILE.gguf: one of ours
            self._touch(gguf.parent.parent)

    def _touch(self, folder: Path) -> None:
        now = time.monotonic()
        if now - self._touched.get(folder, -TOUCH_S) >= TOUCH_S:
            self._touched[folder] = now
            with suppress(OSError):
                (folder / "used").touch()

    # -- exporting ---------------------------------------------------------------------------------

    def _enqueue(self, target: str, folder: Path) -> threading.Event:
        with self._lock:
            done = self._pending.get(target)
            if done is not None:
                return done
            done = threading.Event()
            if self._stop.is_set() or target in self._retries:  # a retry is already due later
                done.set()
                return done
            self._pending[target] = done
            self._jobs.put((target, folder))
            self._threads = [t for t in self._threads if t.is_alive()]
            if not any(t.name == "gguf-export" for t in self._threads):
                thread = threading.Thread(target=self._work, name="gguf-export", daemon=True)
                self._threads.append(thread)
                thread.start()
        return done

    def _work(self) -> None:
        """The export thread: one export at a time, in the order asked."""
        while not self._stop.is_set():
            try:
                item = self._jobs.get(timeout=1.0)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():  # idle: the next ask starts a new thread
                        self._threads = [
                            t for t in self._threads if t is not threading.current_thread()
                        ]
                        return
                continue
            if item is None:
                return
            target, folder = item
            try:
                if target not in self._forgotten:
                    self._export(target, folder)
            except Exception:  # a bug of ours: the target stays on torch, the server goes on
                log.exception("the GGUF export of %s failed", target)
                self._stay(target, "the export failed (internal error)")
            finally:
                with self._lock:
                    done = self._pending.pop(target, None)
                if done is not None:
                    done.set()

    def _export(self, target: str, folder: Path) -> None:
        with self._locked(".export.lock"):  # one export at a time, across processes too
            _clear(self.root, ".export-")  # a killed server's half-made exports
            if _gguf_in(folder) is not None:  # another server made it meanwhile
                self.generation += 1
                return
            work = Path(tempfile.mkdtemp(prefix=".export-", dir=self.root))
            try:
                atomic_write_json(
                    work / "request.json",
                    {
                        "source": target,
                        "format": "gguf",
                        "name": folder.name,
                        "quantize": self.quantize,
                        "verify": False,
                    },
                )
                log.info("exporting %s as %s GGUF for llama.cpp", target, self.quantize)
                started = time.monotonic()
                code = self._run_child(work)
                result = _read(work / "result.json")
                if code == 0 and result.get("ok") and _gguf_in(work) is not None:
                    atomic_write_json(
                        work / "meta.json",
                        {"target": target, "quantize": self.quantize, "created_at": time.time()},
                    )
                    (work / "used").touch()
                    with self._locked():
                        if target in self._forgotten:  # deleted while it was exported
                            return
                        _remove(folder)  # a folder of that name without a GGUF: a leftover
                        work.rename(folder)
                        self.generation += 1
                        self._evict(keep=folder)
                    log.info(
                        "%s exported for llama.cpp in %.1f s", target, time.monotonic() - started
                    )
                    return
                if self._stop.is_set():  # the server is stopping: not the export's failure
                    return
                error = (result.get("error") or {}).get("message")
                if error or code in (1, 2):  # it ended by itself: trying again ends the same
                    why = error or f"the export failed: {_tail(work / 'export.log')}"
                    self._stay(target, str(why))
                    return
                self._again(target, folder, "took longer than the time bound" if code is None
                            else f"was killed (code {code}: out of memory?)")  # fmt: skip
            finally:
                shutil.rmtree(work, ignore_errors=True)

    def _again(self, target: str, folder: Path, why: str) -> None:
        """The export of `target` was killed: try it again later, or give up after `TRIES`."""
        with self._lock:
            tries = self._tries[target] = self._tries.get(target, 0) + 1
            if tries < TRIES and not self._stop.is_set() and target not in self._forgotten:
                delay = self.retry_after_s[min(tries, len(self.retry_after_s)) - 1]
                timer = threading.Timer(delay, self._retry, args=(target, folder))
                timer.daemon = True
                self._retries[target] = timer
                timer.start()
                log.warning("the GGUF export of %s %s; torch serves it, the export is tried "
                            "again in %.0f s", target, why, delay)  # fmt: skip
                return
        self._stay(target, f"the export {why}, {tries} times")

    def _retry(self, target: str, folder: Path) -> None:
        with self._lock:
            self._retries.pop(target, None)
        if not self._stop.is_set() and target not in self._forgotten:
            self._enqueue(target, folder)

    def _run_child(self, work: Path) -> int | None:
        command = [sys.executable, "-m", "tunesmith.server.export_task", str(work)]
        with open(work / "export.log", "wb") as logfile:
            child = subprocess.Popen(  # our interpreter and our module; no shell, no user text
                command, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
                preexec_fn=_background,
            )  # fmt: skip
            self._child = child
            started = time.monotonic()
            try:
                while True:
                    try:
                        return child.wait(timeout=1.0)
                    except subprocess.TimeoutExpired:
                        if self._stop.is_set() or time.monotonic() - started > self.timeout_s:
                            child.kill()
                            child.wait()
                            return None
            finally:
                self._child = None

    @contextmanager
    def _locked(self, name: str = ".lock") -> Iterator[None]:
        """A file lock under the cache (`.lock`: short changes of the cache's folders;
        `.export.lock`: held for a whole export)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / name).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # -- bounds ------------------------------------------------------------------------------------

    def exports(self) -> list[tuple[Path, dict[str, Any], int, float]]:
        """Every finished export: (folder, meta, bytes, last served), least recently served
        first."""
        found = []
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            used = folder / "used"
            when = used.stat().st_mtime if used.exists() else folder.stat().st_mtime
            found.append((folder, _read(folder / "meta.json"), size, when))
        return sorted(found, key=lambda e: e[3])

    def _evict(self, keep: Path) -> None:
        """Delete least recently served exports until the cache fits `max_bytes` (called under
        the file lock)."""
        _clear(self.root, ".trash-")
        if self.max_bytes is None:
            return
        entries = self.exports()
        total = sum(e[2] for e in entries)
        for folder, meta, size, _ in entries:
            if total <= self.max_bytes:
                break
            if folder == keep:
                continue
            log.info("GGUF cache over %d bytes: deleting the export of %s", self.max_bytes,
                     meta.get("target", folder.name))  # fmt: skip
            if _remove(folder):
                total -= size

    def forget(self, target: str) -> int:
        """Delete `target`'s exports (its model was deleted), and one still queued or running
        once it is made; how many there were."""
        removed = 0
        self._forgotten.add(target)
        with self._locked():
            _clear(self.root, ".trash-")
            for folder, meta, _, _ in self.exports():
                if meta.get("target") == target and _remove(folder):
                    removed += 1
        with self._lock:
            self._failed.discard(target)
            self._tries.pop(target, None)
            timer = self._retries.pop(target, None)
            if timer is not None:
                timer.cancel()
        return removed

    # -- jobs that succeed -------------------------------------------------------------------------

    def watch(self, store: Any, every_s: float = WATCH_S) -> None:
        """Export each job that succeeds from now on as soon as it does."""
        thread = threading.Thread(
            target=self._watch, args=(store, every_s), name="gguf-watch", daemon=True
        )
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _watch(self, store: Any, every_s: float) -> None:
        from tunesmith.store import repo

        started, seen = int(time.time()), set[str]()
        while not self._stop.wait(every_s):
            since = max(started, int(time.time()) - WATCH_WINDOW_S)
            try:
                jobs = repo.succeeded_since(store, since, limit=1000)
            except Exception as exc:  # a store hiccup: look again next time
                log.warning("looking for succeeded jobs to export failed: %s", exc)
                continue
            for job in jobs:
                if job.id not in seen and job.run_dir:
                    self.prepare(str(job.run_dir))
            seen = {j.id for j in jobs if j.run_dir}  # what the window still holds

    def close(self) -> None:
        """Stop: a running export is killed (the next server starts it again)."""
        self._stop.set()
        self._jobs.put(None)
        with self._lock:
            for timer in self._retries.values():
                timer.cancel()
            self._retries.clear()
        child = self._child
        if child is not None:
            with suppress(OSError):
                child.kill()
        for thread in list(self._threads):
            thread.join(timeout=10)
        with self._lock:
            for done in self._pending.values():
                done.set()


def _background() -> None:  # runs in the export child before exec
    die_with_parent()
    with suppress(OSError):
        os.nice(NICE)


def _gguf_in(folder: Path) -> Path | None:
    files = sorted(folder.rglob("*.gguf")) if folder.is_dir() else []
    return files[0] if files else None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remove(folder: Path) -> bool:
    """Gone at once for readers (a rename), then deleted; whether it was there to delete."""
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        folder.rename(trash)
    except OSError:
        return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _clear(root: Path, prefix: str) -> None:
    """Delete `root`'s folders named `prefix…`: leftovers, when their lock is held."""
    for leftover in root.glob(f"{prefix}*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _tail(path: Path, limit: int = 400) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "no log"
    return text[-limit:] or "no output"
