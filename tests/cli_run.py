"""Run the `tunesmith` CLI in-process for a test: (exit code, stdout, stderr). A user never sees
a traceback, so none may appear in either stream."""

from __future__ import annotations

import pytest

from tunesmith.cli import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return code, out.out, out.err
