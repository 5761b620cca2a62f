"""`tunesmith export` on the command line: success output, JSON output, one-line user errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "export"))
from export_helpers import make_run


def _main(args: list[str]) -> int:
    from tunesmith.cli import main

    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tiny_model_dir, tmp_path_factory.mktemp("cli-run"))


def test_export_gguf_from_the_command_line(run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "gguf"
    code = _main(["export", str(run), "--format", "gguf", "--quantize", "f16", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "exported gguf (f16)" in printed and "round trip: tokens identical" in printed
    assert "merging: 5%" in captured.err and "done: 100%" in captured.err  # progress
    assert "ollama create" in printed
    assert {p.name for p in out.iterdir()} == {
        "Modelfile",
        "README.md",
        "export.json",
        f"{run.name}-f16.gguf",
    }


def test_json_output_and_default_out_dir(run: Path, capsys) -> None:
    code = _main(["export", str(run), "--format", "hf", "--json", "--no-verify", "--force"])
    assert code == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert "/100" not in captured.err  # no progress with --json
    assert result["format"] == "hf" and result["quantize"] == "f32"
    assert Path(result["out_dir"]) == run.resolve() / "export" / "hf-f32"
    assert "model.safetensors" in result["files"] and result["roundtrip"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "onnx"], "unknown export format 'onnx'"),
        (["--format", "gguf", "--quantize", "q2_k"], "--quantize q2_k is not available"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(run, tmp_path, capsys, args, message) -> None:
    code = _main(["export", str(run), "--out", str(tmp_path / "o"), *args])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_missing_run_dir_exits_2(tmp_path: Path, capsys) -> None:
    assert _main(["export", str(tmp_path / "nope")]) == 2
    assert "no such run or model directory" in capsys.readouterr().err
