"""The child process of a python grader: `python -I _sandbox_runner.py`, request on stdin.

Standard library only and never imported by tunesmith: this file runs as a script, in its own
process, in an empty temporary working directory with an empty environment (see sandbox.py).
Before the user's source is even compiled it shuts the doors, most solid first:

1. resource limits: address space (memory), CPU seconds, bytes written, no core dumps;
2. when started as root and the interpreter's files are readable by anyone: it becomes
   `nobody`, so the kernel keeps it out of other users' files; any unprivileged run also gets
   RLIMIT_NPROC 0, so it cannot fork (nor start threads);
3. an audit hook (PEP 578) that refuses sockets, new processes, exec, signals to other
   processes, ctypes/cffi (which would reach the C library behind the hook's back), raising a
   resource limit, and file access outside the working directory (reading the interpreter's
   own files excepted).

(The parent adds a network namespace when the system allows one.) The audit hook alone is
not a security boundary against hostile code, as Python's docs say; the kernel-level layers
are, where the system provides them, and the result names the layers that were in force.
The result is one JSON object written to the original stdout; the user's own prints go to
stderr (a capped file), so they cannot garble it.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
from typing import Any

NOBODY = 65534
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_REFUSED_EVENTS = (
    "socket.",
    "ctypes.",
    "subprocess.",
    "os.fork",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.system",
    "os.kill",
    "os.killpg",
    "os.setns",
    "os.unshare",
    "signal.pthread_kill",
    "resource.setrlimit",
    "resource.prlimit",
    "sys.remote_exec",
)
_REFUSED_MODULES = ("ctypes", "_ctypes", "cffi", "_cffi_backend")
_PATH_EVENTS = (
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "os.chown",
    "os.link",
    "os.symlink",
    "os.truncate",
    "os.utime",
    "os.chflags",
    "os.lchflags",
    "os.mkfifo",
    "os.mknod",
    "shutil.",
)


def _read_roots() -> list[str]:
    """Where the interpreter reads its own files from: its prefixes and import path."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, "/usr/share/zoneinfo"}
    roots.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted(os.path.realpath(r) for r in roots)


def _set_limits(limits: dict[str, int]) -> None:
    memory, cpu, disk = limits["memory_bytes"], limits["cpu_seconds"], limits["file_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (disk, disk))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _readable_by_all(path: str) -> bool:
    """Every directory from / down to `path` lets others in (r and x), and `path` itself."""
    path = os.path.realpath(path)
    while True:
        try:
            if os.stat(path).st_mode & 0o005 != 0o005:
                return False
        except OSError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _drop_privileges(workdir: str, read_roots: list[str]) -> bool:
    """As root: become nobody, when nobody can still read the interpreter's files."""
    if os.geteuid() != 0 or not all(_readable_by_all(p) for p in read_roots if os.path.isdir(p)):
        return False
    os.chown(workdir, NOBODY, NOBODY)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    return True


def _no_fork() -> bool:
    if os.geteuid() == 0:
        return False  # root is exempt from RLIMIT_NPROC
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    return True


def _install_hook(workdir: str, read_roots: list[str]) -> None:
    """Refuse what a grader never needs. Everything the hook uses is bound here, so user code
    that rebinds `os.path.realpath` and the like does not change what it checks."""
    import _posixsubprocess

    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise PermissionError("starting processes is not allowed in a python grader")

    # subprocess and multiprocessing fork through this C function, which raises no audit
    # event of its own; the module is imported once, here, and a re-import is refused.
    _posixsubprocess.fork_exec = refused

    realpath, join, getcwd, fspath, fsdecode = (
        os.path.realpath,
        os.path.join,
        os.getcwd,
        os.fspath,
        os.fsdecode,
    )
    work = realpath(workdir)
    roots = tuple(realpath(r) for r in read_roots)
    devices = ("/dev/null", "/dev/urandom", "/dev/random")
    modules = sys.modules
    write_flags = _WRITE_FLAGS

    def inside(path: Any, allowed: tuple[str, ...]) -> bool:
        if isinstance(path, int):
            return True  # an already-open descriptor
        try:
            full = realpath(join(getcwd(), fsdecode(fspath(path))))
        except (TypeError, ValueError, OSError):
            return False
        return any(full == a or full.startswith(a.rstrip("/") + "/") for a in allowed)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event.startswith(_REFUSED_EVENTS):
            raise PermissionError(f"{event} is not allowed in a python grader")
        if event == "import":
            name = str(args[0]).partition(".")[0]
            if name in _REFUSED_MODULES or (name == "_posixsubprocess" and name not in modules):
                raise ImportError(f"module {name} is not allowed in a python grader")
        elif event == "open":
            path, mode, flags = args[0], args[1], args[2] or 0
            writes = any(c in str(mode) for c in "wax+") if mode else bool(flags & write_flags)
            if path in devices and not writes:
                return
            if not inside(path, (work,) if writes else (work, *roots)):
                raise PermissionError(f"a python grader may not open {path!r}")
        elif event.startswith(_PATH_EVENTS):
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)) and not inside(path, (work,)):
                    raise PermissionError(f"{event} on {path!r} is not allowed in a python grader")
        elif event == "object.__setattr__" and len(args) > 1 and args[1] == "__code__":
            raise PermissionError("replacing a function's code is not allowed in a python grader")

    sys.addaudithook(hook)


def _where(exc: BaseException) -> str:
    """` (line N)` of the innermost frame in the user's source, if any."""
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<grader>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""


def _describe(exc: BaseException) -> str:
    message = str(exc)
    text = f"{type(exc).__name__}: {message}"[:2000] if message else type(exc).__name__
    return text + _where(exc)


def _run(request: dict[str, Any]) -> dict[str, Any]:
    try:
        code = compile(request["source"], "<grader>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f"line {exc.lineno}: " if exc.lineno else ""
        return {"ok": False, "stage": "compile", "error": f"{where}{exc.msg}"}
    except (ValueError, MemoryError, RecursionError) as exc:
        return {"ok": False, "stage": "compile", "error": _describe(exc)}
    namespace: dict[str, Any] = {"__name__": "grader", "__builtins__": __builtins__}
    try:
        exec(code, namespace)
    except BaseException as exc:
        return {"ok": False, "stage": "load", "error": _describe(exc)}
    grade = namespace.get("grade")
    if not callable(grade):
        return {"ok": False, "stage": "load", "error": "the source defines no function grade"}
    if request["mode"] == "check":
        import inspect

        try:
            inspect.signature(grade).bind(None, None)
        except TypeError:
            return {
                "ok": False,
                "stage": "load",
                "error": "grade must take two arguments: grade(sample, item)",
            }
        except ValueError:
            pass
        return {"ok": True}
    try:
        value = grade(request["sample"], request["item"])
    except BaseException as exc:
        return {"ok": False, "stage": "grade", "error": _describe(exc)}
    if not isinstance(value, (int, float)):  # bool is an int: True scores 1
        return {
            "ok": False,
            "stage": "grade",
            "error": f"grade() returned {type(value).__name__}; it must return a number",
        }
    if not math.isfinite(float(value)):
        return {"ok": False, "stage": "grade", "error": f"grade() returned {value}"}
    return {"ok": True, "score": float(value)}


def main() -> None:
    result_fd = os.dup(1)
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    workdir = os.getcwd()
    read_roots = _read_roots()
    layers = ["resource limits"]
    _set_limits(request["limits"])
    if _drop_privileges(workdir, read_roots):
        layers.append("unprivileged user")
    if _no_fork():
        layers.append("no fork")
    os.dup2(2, 1)  # the user's prints go to the log, never into the result
    _install_hook(workdir, read_roots)
    layers.append("audit hook")
    out = _run(request)
    out["layers"] = layers
    os.write(result_fd, json.dumps(out).encode("utf-8"))


if __name__ == "__main__":
    main()
