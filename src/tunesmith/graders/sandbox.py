"""Run a python grader's `source` in a separate process: time, memory and disk limits, no network.

A python grader is someone else's code (a server job's, or a grader object a user pasted), so
it never runs in this process: each call starts `python -I _sandbox_runner.py` (isolated mode:
no PYTHON* variables, no user site, not even its own directory on the path) in a fresh
temporary working directory, with an empty environment (no inherited secrets), stdin carrying
the request and stdout a file that only the runner writes its answer to. The runner sets its
limits and an audit hook before the source is compiled (see `_sandbox_runner.py`); here, the
process is wrapped in a new network namespace whenever the system lets us make one (`unshare
--net`: no interface but a downed loopback), and killed, with its whole process group, at the
wall-clock limit.

One process per call costs about 50 ms, small beside generating the completion it grades.
The first check of a source (`check_source`, the validate step) compiles it and loads it there
too, so a syntax error is a build-time error and never reaches a training run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tunesmith.graders.failures import GraderError

RUNNER = Path(__file__).with_name("_sandbox_runner.py")
MAX_SOURCE_BYTES = 256 * 1024  # OpenAI's limit on a python grader's source
_RESULT_CAP = 1 << 20
_LOG_TAIL = 2000


@dataclass(frozen=True)
class PythonLimits:
    """Limits of one python-grader call. `timeout_s` is wall-clock and CPU time alike;
    `memory_mb` the address space (Python itself takes ~30 MB, numpy ~100 MB more);
    `disk_mb` the most any file it writes may grow to; `interpreter` the Python that runs it
    (default: this one; an operator may name one whose files everyone can read, so that a
    child started as root can drop to `nobody`, or one with the libraries graders may use)."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    disk_mb: int = 64
    interpreter: str = ""


@lru_cache(maxsize=1)
def network_namespace() -> tuple[str, ...]:
    """The command prefix that gives a child its own, empty network namespace, or () when
    this system allows none (then the audit hook alone keeps sockets shut)."""
    unshare = shutil.which("unshare")
    if not unshare:
        return ()
    for prefix in ((unshare, "--net"), (unshare, "--user", "--net")):
        try:
            probe = subprocess.run(
                [*prefix, "--", sys.executable, "-I", "-c", "pass"],
                capture_output=True,
                timeout=10,
                env={"PATH": os.defpath},
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return prefix
    return ()


def _environment(workdir: str) -> dict[str, str]:
    """Nothing of ours: no keys, tokens or paths; one thread for numeric libraries."""
    return {
        "PATH": os.defpath,
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _read_tail(path: Path, cap: int) -> str:
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - cap))
            return f.read(cap).decode("utf-8", "replace")
    except OSError:
        return ""


def _killed(code: int, limits: PythonLimits, log: str) -> GraderError:
    """What a child that died of a signal ran into."""
    sig = -code
    if sig == signal.SIGXCPU:
        return GraderError(
            "unresponsive_reward_error",
            f"the python grader was stopped at its CPU time limit ({limits.timeout_s:g} s)",
        )
    if sig == signal.SIGXFSZ:
        return GraderError(
            "python_grader_runtime_error",
            f"the python grader wrote more than its disk limit ({limits.disk_mb} MB)",
        )
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
    hint = " (out of memory?)" if sig in (signal.SIGKILL, signal.SIGSEGV) else ""
    detail = f": {log.strip().splitlines()[-1]}" if log.strip() else ""
    return GraderError(
        "python_grader_runtime_error", f"the python grader was killed by {name}{hint}{detail}"
    )


def _call(request: dict[str, Any], limits: PythonLimits) -> dict[str, Any]:
    """Run the runner on `request`; its answer, or a GraderError saying why there is none."""
    child_limits = {
        "memory_bytes": int(limits.memory_mb) << 20,
        "cpu_seconds": max(1, math.ceil(limits.timeout_s)),
        "file_bytes": int(limits.disk_mb) << 20,
    }
    request = {**request, "limits": child_limits}
    payload = json.dumps(request, ensure_ascii=False, default=str).encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="tunesmith-grader-") as tmp:
        os.chmod(tmp, 0o711)  # a child that drops to nobody can still reach its own work dir
        work = Path(tmp) / "work"
        work.mkdir()
        result_path, log_path = Path(tmp) / "result.json", Path(tmp) / "log.txt"
        cmd = [*network_namespace(), limits.interpreter or sys.executable, "-I", str(RUNNER)]
        with result_path.open("wb") as out, log_path.open("wb") as log:
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=log,
                    cwd=work,
                    env=_environment(str(work)),
                    start_new_session=True,
                )
            except OSError as exc:
                raise GraderError(
                    "python_grader_server_error", f"could not start the python grader: {exc}"
                ) from None
            started = time.monotonic()
            try:
                proc.communicate(payload, timeout=limits.timeout_s + 1.0)  # + start-up
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise GraderError(
                    "unresponsive_reward_error",
                    f"the python grader was killed at its time limit ({limits.timeout_s:g} s)",
                ) from None
            finally:
                if proc.poll() is None:
                    _kill_group(proc)
            elapsed = time.monotonic() - started
        log_tail = _read_tail(log_path, _LOG_TAIL)
        if proc.returncode < 0:
            raise _killed(proc.returncode, limits, log_tail)
        text = _read_tail(result_path, _RESULT_CAP)
        try:
            answer = json.loads(text)
            assert isinstance(answer, dict)
        except (ValueError, AssertionError):
            last = log_tail.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            raise GraderError(
                "python_grader_runtime_error", f"the python grader gave no result: {last[0]}"
            ) from None
        answer["elapsed_s"] = elapsed
        return answer


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def check_source(source: str, limits: PythonLimits | None = None) -> tuple[str | None, list[str]]:
    """Compile and load `source` in the sandbox: (what is wrong or None, the isolation layers
    that were in force)."""
    if len(source.encode("utf-8")) > MAX_SOURCE_BYTES:
        return f"is larger than {MAX_SOURCE_BYTES // 1024} KB", []
    limits = limits or PythonLimits()
    try:
        answer = _call({"mode": "check", "source": source}, limits)
    except GraderError as exc:
        return f"loading it failed: {exc.message}", []
    layers = list(answer.get("layers", []))
    if network_namespace():
        layers.insert(0, "network namespace")
    if answer.get("ok"):
        return None, layers
    return str(answer.get("error")), layers


def run_source(
    source: str, sample: dict[str, Any], item: dict[str, Any], limits: PythonLimits | None = None
) -> float:
    """`grade(sample, item)` of `source`, run in the sandbox; a failure is a GraderError
    (`python_grader_runtime_error`, or `unresponsive_reward_error` at the time limit)."""
    limits = limits or PythonLimits()
    answer = _call({"mode": "grade", "source": source, "sample": sample, "item": item}, limits)
    if not answer.get("ok"):
        error = str(answer.get("error"))
        if error.startswith("MemoryError"):
            error = f"{error}: over its memory limit ({limits.memory_mb} MB)"
        raise GraderError("python_grader_runtime_error", error)
    return float(answer["score"])
