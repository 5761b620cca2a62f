"""The README's commands work as written (issue 11 item 18): every file an example names is
shipped, and the torchrun line needs no activated virtual environment."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent


def _shell_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [ln.split("  #")[0].strip() for b in blocks for ln in b.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def test_every_file_an_example_reads_is_shipped() -> None:
    checked = 0
    for line in _shell_lines():
        words = shlex.split(line.replace("$T", ".venv/bin/tunesmith"))
        for i, word in enumerate(words):
            named = words[i + 1] if word in ("--data", "--val", "--validation") else None
            if word == "validate" or (word == "train" and i + 1 < len(words)):
                following = words[i + 1] if i + 1 < len(words) else ""
                named = following if following.endswith((".jsonl", ".yaml")) else named
            if named and named.endswith((".jsonl", ".yaml")):
                assert (REPO / named).is_file(), f"README names {named}, which is not shipped"
                checked += 1
    assert checked >= 5
    assert "--data examples/chat-heldout.jsonl" in README  # the eval example's held-out file


def test_the_torchrun_line_works_without_an_activated_venv() -> None:
    (line,) = [ln for ln in _shell_lines() if "torchrun" in ln]
    words = line.replace("$T", ".venv/bin/tunesmith").split()
    assert words[0] == ".venv/bin/torchrun" and "$(" not in line, line
    torchrun = BIN / "torchrun"
    if not torchrun.is_file():
        pytest.skip("torchrun is not installed beside this Python")
    # the same launcher with a PATH that has no venv on it: the command is found by its path
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH="/usr/bin:/bin", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [str(torchrun), "--nproc-per-node", "1", str(BIN / "tunesmith"), "--version"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tunesmith" in out.stdout


def test_the_python_api_example_prints_a_string() -> None:
    assert 'print(api.generate(run.run_dir, "My order 7XK2P never arrived!"))  # a string' in README
