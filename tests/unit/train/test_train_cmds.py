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


def _flags(model, data, out) -> list[str]:
    return ["train", "--model", str(model), "--data", str(data), "--output-dir", str(out),
            "--max-seq-len", "128", "--no-progress"]  # fmt: skip


def test_supervised_on_a_preference_file_fails_before_the_model_loads(
    tmp_path, capsys, tiny_model_dir, monkeypatch
):
    """Issue 11 item 11: named file and method, what the file is for, exit 2, nothing written."""
    from tunesmith.models import load

    def no_model(*a, **k):
        raise AssertionError("the model was loaded for a file training cannot use")

    monkeypatch.setattr(load, "load_model", no_model)
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(
        "".join(
            json.dumps({"prompt": f"q {i}", "chosen": "good", "rejected": "bad"}) + "\n"
            for i in range(12)
        )
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = _run(_flags(tiny_model_dir, prefs, tmp_path / "r"), capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{prefs}: method 'supervised' trains on conversations" in err
    assert "this file holds preference pairs" in err and "they are for method 'dpo'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run directory


def test_the_end_of_training_comparison_prints_verdict_warnings_and_report(
    tmp_path, capsys, tiny_model_dir, chat_file, val_file, monkeypatch
):
    """Issue 11 item 14: the verdict line, every warning (forgetting) and the report's path
    reach the terminal through the event stream, not only RUN/eval/report.md."""
    import sys
    from dataclasses import replace
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
    from sample_comparison import make_comparison

    from tunesmith import api
    from tunesmith.eval.report import write_reports

    def fake_compare(run_dir, *args, **kwargs):  # known numbers, with a forgetting warning
        result = make_comparison(Path(run_dir))
        result.forgetting = replace(result.forgetting, threshold=0.05, warning=True)
        write_reports(result, Path(run_dir) / "eval")
        return result

    monkeypatch.setattr(api, "compare", fake_compare)
    out_dir = tmp_path / "r"
    argv = [*_flags(tiny_model_dir, chat_file, out_dir), "--validation", str(val_file)]
    code, out, err = _run([*argv, "--max-steps", "2"], capsys)
    assert code == 0, err
    verdict = make_comparison(out_dir).verdict()
    assert verdict in err and verdict.startswith("The tuned model is significantly better")
    assert "WARNING: perplexity on the general reference set rose +5.7%" in err
    assert f"report: {out_dir / 'eval' / 'report.html'}" in err
    assert "done (completed)" in out


def test_dedupe_drops_repeats_loudly_when_training(tmp_path, capsys, tiny_model_dir, chat_file):
    """Issue 11 item 17: repeated rows train (with a warning naming them) or, with --dedupe,
    are dropped, each line named."""
    rows = chat_file.read_text().splitlines()
    data = tmp_path / "dups.jsonl"
    data.write_text("\n".join([*rows, rows[0], rows[3]]) + "\n")
    code, _, err = _run([*_flags(tiny_model_dir, data, tmp_path / "a"), "--max-steps", "1"], capsys)
    assert code == 0, err
    assert "2 exact duplicate rows kept" in err and f"{data}:{len(rows) + 1}" in err
    code, _, err = _run(
        [*_flags(tiny_model_dir, data, tmp_path / "b"), "--max-steps", "1", "--dedupe"], capsys
    )
    assert code == 0, err
    assert f"2 exact duplicate rows dropped (data.dedupe): {data}:{len(rows) + 1}" in err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["data"]["train_examples"] == len(rows)
