"""The CLI: version/help, user errors exit 2 with one line and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith import __version__
from tunesmith.cli import main

EXE = str(Path(sys.executable).parent / "tunesmith")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120)


def test_version_and_help() -> None:
    out = run("--version")
    assert out.returncode == 0 and __version__ in out.stdout
    helptext = run("--help")
    assert helptext.returncode == 0
    for command in ("generate", "chat", "models"):
        assert command in helptext.stdout


def test_generate_missing_model_exits_2_one_line() -> None:
    out = run("generate", "/no/such/model", "hi")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "/no/such/model" in lines[0]


def test_generate_with_tiny_model(tiny_model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from tunesmith import api

    with pytest.raises(SystemExit) as code:
        main(["generate", str(tiny_model_dir), "hello", "--max-new-tokens", "5"])
    assert code.value.code in (0, None)
    expected = api.generate(str(tiny_model_dir), "hello", max_new_tokens=5)
    assert capsys.readouterr().out == expected + "\n"


def test_chat_reset_and_exit(tiny_model_dir: Path) -> None:
    proc = subprocess.run(
        [EXE, "chat", str(tiny_model_dir), "--max-new-tokens", "4"],
        input="hello\n/reset\nagain\n/exit\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("model>") == 2
    assert "conversation cleared" in proc.stderr


def test_pull_shows_the_conversion_named_and_then_where_it_is(monkeypatch, capsys, tmp_path):
    from tunesmith import api, events

    def fake_pull(name, *, on_event=None):
        on_event(events.progress("pull", 5, 100, "reading tokenizer"))
        on_event(events.progress("pull", 100, 100, "done"))
        return tmp_path

    monkeypatch.setattr(api, "pull_model", fake_pull)
    with pytest.raises(SystemExit) as code:
        main(["models", "pull", "my-model"])
    assert code.value.code in (0, None)
    captured = capsys.readouterr()
    assert captured.out.startswith("ready:") and tmp_path.name in captured.out.replace("\n", "")
    assert "my-model: reading tokenizer: 5/100" in captured.err  # not a terminal: plain lines
    assert "my-model: done: 100/100" in captured.err
