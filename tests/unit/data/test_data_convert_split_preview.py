"""convert (to OpenAI chat), split (deterministic, no overlap) and preview (trained marks)."""

from __future__ import annotations

import json

import pytest
from data_rows import chat_row, chat_rows

from tunesmith.data.convert import convert_file
from tunesmith.data.formats import record_to_json
from tunesmith.data.prepare import read_records
from tunesmith.data.preview import preview_file
from tunesmith.data.split import split_file
from tunesmith.data.validate import record_key
from tunesmith.errors import DataError


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_convert_alpaca_to_chat_round_trips(write_jsonl, tmp_path):
    rows = [{"instruction": f"Say {i}", "input": "", "output": f"{i}"} for i in range(5)]
    src = write_jsonl(rows, "alpaca.jsonl")
    out = tmp_path / "chat.jsonl"
    result = convert_file(src, out)
    assert result.rows_written == 5 and result.format == "alpaca"
    data = read_jsonl(out)
    assert data[2] == {
        "messages": [{"role": "user", "content": "Say 2"}, {"role": "assistant", "content": "2"}]
    }
    assert [r.messages for r in read_records(out)] == [r.messages for r in read_records(src)]


def test_convert_completion_marks_earlier_turns_untrained(write_jsonl, tmp_path):
    src = write_jsonl([{"prompt": "q", "completion": "a"}])
    out = tmp_path / "o.jsonl"
    convert_file(src, out)
    assert read_jsonl(out) == [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    ]


def test_convert_preference_to_openai_dpo(write_jsonl, tmp_path):
    src = write_jsonl([{"prompt": "q", "chosen": "good", "rejected": "bad"}])
    out = tmp_path / "o.jsonl"
    convert_file(src, out)
    (row,) = read_jsonl(out)
    assert row["input"]["messages"] == [{"role": "user", "content": "q"}]
    assert row["non_preferred_output"] == [{"role": "assistant", "content": "bad"}]


def test_convert_with_bad_rows_writes_nothing_and_names_them(write_jsonl, tmp_path):
    rows = chat_rows(8)
    rows[2] = "{broken"
    rows[5] = {"messages": [{"role": "user", "content": "q"}]}
    out = tmp_path / "o.jsonl"
    with pytest.raises(DataError) as info:
        convert_file(write_jsonl(rows), out)
    assert info.value.where.endswith(":3") and "line 6" in str(info.value)
    assert "2 bad row(s)" in str(info.value)
    assert not out.exists() and list(tmp_path.glob(".o.jsonl.*")) == []


def test_convert_failing_mid_write_keeps_the_old_output(write_jsonl, tmp_path, monkeypatch):
    from tunesmith.data import convert

    out = tmp_path / "o.jsonl"
    out.write_text("old\n")
    written = []

    def fail_on_third(rec):
        if len(written) == 2:
            raise OSError("disk full")
        written.append(rec)
        return record_to_json(rec)

    monkeypatch.setattr(convert, "record_to_json", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        convert_file(write_jsonl(chat_rows(8)), out)
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "o.jsonl"]
    monkeypatch.undo()
    rows = chat_rows(8)
    rows[3] = "{broken"
    with pytest.raises(DataError):
        convert_file(write_jsonl(rows), out)
    assert out.read_text() == "old\n"


def test_convert_into_an_unwritable_folder_is_a_data_error(write_jsonl, tmp_path, monkeypatch):
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    out = tmp_path / "o.jsonl"
    with pytest.raises(DataError, match="cannot write here: Permission denied") as info:
        convert_file(write_jsonl(chat_rows(3)), out)
    assert info.value.where == str(out)


def test_split_failing_mid_write_keeps_both_old_outputs(write_jsonl, tmp_path, monkeypatch):
    from tunesmith.data import split

    src = write_jsonl(chat_rows(20))
    train_out, val_out = tmp_path / "t.jsonl", tmp_path / "v.jsonl"
    train_out.write_text("old train\n")
    val_out.write_text("old val\n")
    real = split._open_binary

    class Cut:
        """The source, cut by an I/O error half-way through the copy."""

        def __init__(self, path):
            self.f = real(path)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __iter__(self):
            for i, line in enumerate(self.f):
                if i == 10:
                    raise OSError("read error")
                yield line

    monkeypatch.setattr(split, "_open_binary", Cut)
    with pytest.raises(OSError, match="read error"):
        split_file(src, fraction=0.2, train_out=train_out, validation_out=val_out)
    assert train_out.read_text() == "old train\n" and val_out.read_text() == "old val\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "t.jsonl", "v.jsonl"]


def test_split_is_deterministic_disjoint_and_lossless(write_jsonl, tmp_path):
    rows = chat_rows(50)
    rows[10] = chat_row(3)  # duplicates of line 4 must stay on the same side
    rows[20] = chat_row(3)
    src = write_jsonl(rows)
    a = split_file(src, fraction=0.2, seed=7)
    train_lines = a.train_path.read_text().splitlines()
    val_lines = a.validation_path.read_text().splitlines()
    assert len(val_lines) == a.validation_rows and a.train_rows + a.validation_rows == 50
    assert 9 <= a.validation_rows <= 11
    original = src.read_text().splitlines()
    assert sorted(train_lines + val_lines) == sorted(original)  # byte-for-byte lines
    keys = lambda p: {record_key(r) for r in read_records(p)}  # noqa: E731
    assert not keys(a.train_path) & keys(a.validation_path)
    first_val = list(val_lines)
    b = split_file(src, fraction=0.2, seed=7)
    assert b.validation_path.read_text().splitlines() == first_val
    c = split_file(
        src,
        fraction=0.2,
        seed=8,
        train_out=tmp_path / "t2.jsonl",
        validation_out=tmp_path / "v2.jsonl",
    )
    assert c.validation_path.read_text().splitlines() != first_val


def test_split_csv_writes_chat_jsonl(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("prompt,completion\n" + "".join(f"q{i},a{i}\n" for i in range(10)))
    r = split_file(src, fraction=0.3, seed=0)
    assert r.train_path.name == "d.train.jsonl" and r.validation_rows == 3
    assert all("messages" in row for row in read_jsonl(r.validation_path))


def test_split_refuses_bad_files(write_jsonl):
    rows = chat_rows(10)
    rows[4] = "nope"
    with pytest.raises(DataError) as info:
        split_file(write_jsonl(rows), fraction=0.2)
    assert info.value.where.endswith(":5")


def test_preview_marks_exactly_the_trained_text(write_jsonl, tiny_tokenizer):
    rows = [
        {
            "messages": [
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "draft", "weight": 0},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "final answer"},
            ]
        }
    ]
    (p,) = preview_file(write_jsonl(rows), tiny_tokenizer)
    assert p.trained_text == "final answer<|im_end|>"
    assert "⟦final answer<|im_end|>⟧\n" in p.marked()
    assert "draft<|im_end|>" in p.text and "⟦draft" not in p.marked()
    assert p.text.startswith("<|im_start|>system\n")  # the template's default system prompt
    (every,) = preview_file(write_jsonl(rows, "b.jsonl"), tiny_tokenizer, train_on="all")
    assert every.n_trained == every.n_tokens and every.trained_text == every.text


def test_preview_preference_shows_both_answers(write_jsonl, tiny_tokenizer):
    path = write_jsonl([{"prompt": "q", "chosen": "yes", "rejected": "no"}])
    chosen, rejected = preview_file(path, tiny_tokenizer, n=1)
    assert (chosen.kind, chosen.trained_text) == ("chosen", "yes<|im_end|>")
    assert (rejected.kind, rejected.trained_text) == ("rejected", "no<|im_end|>")


def test_split_keeps_exact_and_near_duplicates_on_one_side(write_jsonl):
    rows = chat_rows(30)
    twin = chat_row(3)
    twin["messages"][1]["content"] = twin["messages"][1]["content"].upper() + "!!"
    rows[10], rows[20] = chat_row(3), twin  # lines 4, 11 and 21 belong together
    src = write_jsonl(rows)
    sides = set()
    for seed in range(12):
        r = split_file(src, fraction=0.3, seed=seed)
        val = r.validation_path.read_text().splitlines()
        together = {line in val for line in (json.dumps(rows[3]), json.dumps(twin))}
        assert len(together) == 1, f"seed {seed} split a duplicate group"
        sides |= together
    assert sides == {True, False}  # the group does move between sides as seeds change
