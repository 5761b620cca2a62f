"""`tunesmith train` through the real entry point: one-line errors, exit 2, no traceback."""

from __future__ import annotations

import json

import pytest
from train_helpers import base_spec, write_config

from tunesmith.cli import main


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else 0
    return code, out.out, out.err


def test_unknown_override_exits_2_with_suggestion(tmp_path, capsys, tiny_model_dir, chat_file):
    cfg = write_config(tmp_path / "run.yaml", base_spec(tiny_model_dir, chat_file, tmp_path / "r"))
    code, _, err = _run(["train", str(cfg), "lora.rank=4"], capsys)
    assert code == 2
    assert "unknown key 'lora.rank'" in err and "did you mean 'lora.r'?" in err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_unknown_key_in_file_exits_2(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: x\nepoch: 3\n")
    code, _, err = _run(["train", str(cfg)], capsys)
    assert code == 2 and f"{cfg}:2" in err and "did you mean 'epochs'?" in err


def test_flags_override_the_file_and_print_config(tmp_path, capsys, tiny_model_dir, chat_file):
    cfg = write_config(tmp_path / "run.yaml", base_spec(tiny_model_dir, chat_file, tmp_path / "r"))
    code, out, _ = _run(
        ["train", str(cfg), "lora.r=4", "--max-steps", "7", "--adapter", "dora", "--print-config"],
        capsys,
    )
    assert code == 0
    assert "max_steps: 7" in out and "adapter: dora" in out and "  r: 4" in out


def test_bad_data_file_exits_2_naming_the_line(tmp_path, capsys, tiny_model_dir):
    data = tmp_path / "bad.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, '
        '{"role": "assistant", "content": "yo"}]}\n{not json\n'
    )
    code, _, err = _run(
        [
            "train",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(data),
            "--output-dir",
            str(tmp_path / "r"),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 2 and "bad.jsonl:2" in err
    assert not (tmp_path / "r").exists()


def test_train_then_resume_a_finished_run_via_flags(tmp_path, capsys, tiny_model_dir, chat_file):
    out_dir = tmp_path / "run"
    code, out, _ = _run(
        [
            "train",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(chat_file),
            "--max-steps",
            "3",
            "--output-dir",
            str(out_dir),
            "--max-seq-len",
            "128",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, out
    assert "done (completed)" in out and "final loss" in out
    metrics = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    code, _, err = _run(["train", "--resume", str(out_dir), "lora.r=2"], capsys)
    assert code == 2 and "--resume continues a run" in err
