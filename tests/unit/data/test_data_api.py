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
