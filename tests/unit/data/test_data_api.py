"""The Data section of `tunesmith.api`: what the CLI and the server call."""

from __future__ import annotations

from data_rows import chat_rows

from tunesmith import api


def test_api_validate_prepare_and_structure_only(write_jsonl, tiny_model_dir, tiny_tokenizer):
    path = write_jsonl(chat_rows(12))
    report = api.validate_data(path, model=str(tiny_model_dir), max_seq_len=512)
    assert report.ok and report.stats["tokens"]["trained"]["sum"] > 0
    assert report.hyperparameters["epochs"] >= 1 and report.estimate["n_params"] > 0
    bare = api.validate_data(path, model=None)
    assert bare.ok and bare.stats["tokens"] is None and bare.estimate is None
    data = api.prepare_sft(path, tiny_tokenizer, max_seq_len=512, validation_fraction=0.25)
    assert len(data.train) == 9 and len(data.validation) == 3


def test_api_preview_convert_split(write_jsonl, tiny_model_dir, tmp_path):
    src = write_jsonl([{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(10)])
    (p,) = api.preview_data(src, model=str(tiny_model_dir), n=1)
    assert p.trained_text == "a0<|im_end|>"
    out = api.convert_data(src, tmp_path / "chat.jsonl")
    assert out.rows_written == 10
    split = api.split_data(out.path, val=0.2, seed=1)
    assert (split.train_rows, split.validation_rows) == (8, 2)


def test_api_validate_reports_progress_events_per_file(write_jsonl, tmp_path):
    train = write_jsonl(chat_rows(3000), "train.jsonl")  # > 2048 lines: the reader reports
    val = write_jsonl(chat_rows(12)[::-1], "val.jsonl")
    seen = []
    report = api.validate_data(train, model=None, validation=val, on_event=seen.append)
    assert {e.kind for e in seen} == {"progress"}
    phases = [e.phase for e in seen]
    assert phases[0] == "validate:train" and phases[-1] == "validate:validation"
    for path, phase in ((train, "validate:train"), (val, "validate:validation")):
        mine = [e for e in seen if e.phase == phase]
        size = path.stat().st_size
        assert mine[-1].done == mine[-1].total == size
        assert [e.done for e in mine] == sorted(e.done for e in mine)
        assert mine[-1].message == f"checking {path.name}"
    assert len([e for e in seen if e.phase == "validate:train"]) >= 2
    assert report.files[0].rows_read == 3000


def test_validate_predicts_the_run_train_makes(tmp_path, tiny_model_dir, monkeypatch):
    """Issue 11 item 12: one max_seq_len default (the run spec's), so `data validate` predicts
    exactly the steps `train` then runs (it predicted 114 and ran 104 with two defaults)."""
    import sys
    from pathlib import Path

    from tunesmith.train import loop

    # the resolved spec is what is compared: the 100 steps themselves are not run here
    monkeypatch.setattr(loop, "train_loop", lambda ctx: "cancelled")

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))
    from train_helpers import write_chat

    from tunesmith.config import DataSpec

    data = write_chat(tmp_path / "train.jsonl", 48)
    report = api.validate_data(data, model=str(tiny_model_dir))
    default = DataSpec().max_seq_len
    hp = report.hyperparameters
    assert report.settings["max_seq_len"] == default and hp["max_seq_len"] == default
    run = api.train(
        {
            "model": str(tiny_model_dir),
            "data": {"train": str(data)},  # every default, as a new user types it
            "output_dir": str(tmp_path / "run"),
            "eval": {"compare_base": False},
        }
    )
    spec = run.spec
    assert spec.data.max_seq_len == default
    assert (spec.epochs, spec.batch_size, spec.grad_accum, spec.total_steps) == (
        hp["epochs"],
        hp["batch_size"],
        hp["grad_accum"],
        hp["total_steps"],
    )
