"""Python graders: their own process, time and memory limits, no network, only when allowed."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from tunesmith.graders import (
    GraderConfigError,
    GraderError,
    Item,
    PythonLimits,
    Sample,
    build_grader_object,
    run_grader,
    validate_grader,
)

LIMITS = PythonLimits(timeout_s=1.0, memory_mb=512)


def python(source: str) -> dict[str, object]:
    return {"type": "python", "name": "code", "source": textwrap.dedent(source)}


def build(source: str):
    return build_grader_object(python(source), allow_python=True, python_limits=LIMITS)


def failure(source: str, output: str = "x") -> GraderError:
    with pytest.raises(GraderError) as err:
        build(source).grade(Sample(output), Item(fields={}))
    return err.value


def test_refused_unless_the_caller_allows_python() -> None:
    source = "def grade(sample, item):\n    return 1.0\n"
    (error,) = validate_grader(python(source))
    assert error.startswith("grader.type: python graders are not allowed here")
    with pytest.raises(GraderConfigError, match="not allowed"):
        build_grader_object(python(source))
    assert validate_grader(python(source), allow_python=True, python_limits=LIMITS) == []


def test_a_correct_grader_returns_its_value() -> None:
    grader = build(
        """
        def grade(sample, item):
            answer = (sample["output_json"] or {}).get("answer")
            return 1.0 if answer == item["a"] + item["b"] else 0.25
        """
    )
    assert grader.grade(Sample('{"answer": 5}'), Item(fields={"a": 2, "b": 3})) == 1.0
    assert grader.grade(Sample("five"), Item(fields={"a": 2, "b": 3})) == 0.25
    assert grader.bounded is False and "audit hook" in grader.details["isolation"]
    assert build("def grade(s, i):\n    return True\n").grade(Sample(""), Item()) == 1.0


def test_it_cannot_open_a_socket() -> None:
    err = failure(
        """
        import socket
        def grade(sample, item):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("127.0.0.1", 9))
            return 1.0
        """
    )
    assert err.kind == "python_grader_runtime_error"
    assert "socket" in err.message and "not allowed" in err.message and "(line 4)" in err.message
    resolve = failure(
        "import socket\ndef grade(s, i):\n    socket.getaddrinfo('example.com', 80)\n"
    )
    assert "socket.getaddrinfo is not allowed" in resolve.message
    # The run endpoint reports it as the grade's error, in OpenAI's shape.
    result = run_grader(
        python("import socket\ndef grade(s, i):\n    socket.socket()\n    return 1.0\n"),
        "x",
        {},
        allow_python=True,
        python_limits=LIMITS,
    )
    errors = result["metadata"]["errors"]
    assert result["reward"] == 0.0 and errors["python_grader_runtime_error"] is True
    assert "socket" in errors["python_grader_runtime_error_details"]


def test_an_infinite_loop_is_killed_at_its_time_limit() -> None:
    started = time.monotonic()
    err = failure("def grade(sample, item):\n    while True:\n        pass\n")
    assert err.kind == "unresponsive_reward_error" and "time limit (1 s)" in err.message
    assert time.monotonic() - started < 15
    asleep = failure("import time\ndef grade(sample, item):\n    time.sleep(60)\n")
    assert asleep.kind == "unresponsive_reward_error"


def test_a_memory_hog_is_stopped() -> None:
    at_once = failure("def grade(sample, item):\n    return len(bytearray(8 << 30))\n")
    assert at_once.kind == "python_grader_runtime_error"
    assert "MemoryError" in at_once.message and "memory limit (512 MB)" in at_once.message
    creeping = failure(
        """
        def grade(sample, item):
            hog = []
            while True:
                hog.append(bytearray(1 << 20))
        """
    )
    # Stopped either way: MemoryError at the limit, or (on a host short of memory, or too
    # slow to reach the limit in time) killed.
    stopped = ("MemoryError", "out of memory", "time limit")
    assert any(word in creeping.message for word in stopped), creeping.message


def test_no_secrets_no_files_no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_TEST_SECRET", "hunter2")
    grader = build(
        """
        import os
        def grade(sample, item):
            leaked = [k for k in os.environ if "SECRET" in k or "KEY" in k]
            return float(len(leaked) * 100 + len(os.listdir(".")))
        """
    )
    assert grader.grade(Sample(""), Item()) == 0.0  # clean environment, empty working dir
    this_file = Path(__file__).resolve()
    read = failure(f"def grade(s, i):\n    return len(open({str(this_file)!r}).read())\n")
    assert "may not open" in read.message
    spawn = failure("import subprocess\ndef grade(s, i):\n    return subprocess.call(['true'])\n")
    assert "subprocess.Popen is not allowed" in spawn.message
    fork = failure("import os\ndef grade(s, i):\n    os.fork()\n    return 1.0\n")
    assert "os.fork is not allowed" in fork.message
    kill = failure(f"import os\ndef grade(s, i):\n    os.kill({os.getpid()}, 9)\n")
    assert "os.kill is not allowed" in kill.message
    scratch = build(
        "def grade(s, i):\n    open('t', 'w').write('ok')\n    return len(open('t').read())\n"
    )
    assert scratch.grade(Sample(""), Item()) == 2.0  # its own working directory is writable


def test_bad_sources_are_build_time_errors() -> None:
    def errors(source: str) -> list[str]:
        return validate_grader(python(source), allow_python=True, python_limits=LIMITS)

    (syntax,) = errors("def grade(sample, item)\n    return 1\n")
    assert syntax.startswith("grader.source: line 1: ")
    assert errors("x = 1\n") == ["grader.source: the source defines no function grade"]
    assert errors("def grade(sample):\n    return 1\n") == [
        "grader.source: grade must take two arguments: grade(sample, item)"
    ]
    (on_load,) = errors("import socket\nsocket.socket()\ndef grade(s, i):\n    return 1\n")
    assert on_load.startswith("grader.source: PermissionError: socket.__new__ is not allowed")
    assert validate_grader({"type": "python", "name": "p"}, allow_python=True) == [
        "grader.source: is required"
    ]
    with pytest.raises(GraderConfigError, match=r"grader\.source: line 1"):
        build("def grade(:\n")


def test_a_non_number_is_the_grades_error() -> None:
    assert "must return a number" in failure("def grade(s, i):\n    return 'high'\n").message
    assert "returned nan" in failure("def grade(s, i):\n    return float('nan')\n").message
    raised = failure("def grade(s, i):\n    return s['output_json']['answer']\n", "not json")
    assert raised.message.startswith("TypeError") and "(line 2)" in raised.message
