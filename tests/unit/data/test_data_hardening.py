"""Bad input from a careless user: every case gives one clear error (file, line, field), exit
code 2, no traceback, and nothing half-written. Fast: structure-only (`--no-tokens`) and
in-process through the CLI entry point, except where token counts are the point."""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from data_rows import chat_row, chat_rows

from cli_run import run_cli as run
from tunesmith.cli import main
from tunesmith.data import readers
from tunesmith.data.convert import convert_file
from tunesmith.data.prepare import prepare_sft, read_records
from tunesmith.data.readers import iter_rows
from tunesmith.data.split import split_file
from tunesmith.data.validate import validate
from tunesmith.errors import DataError

U = {"role": "user", "content": "question here"}


def lines(rows: list[Any]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def write(path: Path, rows: list[Any]) -> Path:
    path.write_text(lines(rows), encoding="utf-8")
    return path


def bad_row(mutate) -> dict[str, Any]:
    row = json.loads(json.dumps(chat_row(2)))
    mutate(row)
    return row


def set_msg(i: int, key: str, value: Any):
    return lambda r: r["messages"][i].__setitem__(key, value)


# (row placed at line 3 of 12 good rows, code, field, words in the message)
BAD_ROWS = [
    (bad_row(set_msg(1, "content", ["a", "b"])), "bad_type", "messages[1].content", "string"),
    (bad_row(set_msg(1, "content", 5)), "bad_type", "messages[1].content", "string"),
    (bad_row(set_msg(1, "content", None)), "missing_key", "messages[1]", "content"),
    (bad_row(set_msg(1, "content", [{"type": "text", "text": 5}])), "bad_type", None, "string"),
    (bad_row(lambda r: r.__setitem__("messages", {"role": "user"})), "bad_type", "messages", ""),
    (bad_row(lambda r: r["messages"][1].pop("role")), "missing_key", "messages[1]", "role"),
    (bad_row(set_msg(1, "weight", "1")), "bad_weight", "messages[1].weight", "'1'"),
    (bad_row(set_msg(1, "weight", 2)), "bad_weight", "messages[1].weight", "0 or 1"),
    (bad_row(set_msg(1, "role", ["assistant"])), "unknown_role", "messages[1].role", ""),
    (
        bad_row(
            lambda r: r["messages"].append(
                {"role": "assistant", "content": None, "tool_calls": [{"id": "x"}]}
            )
        ),
        "unsupported",
        "messages[2].tool_calls",
        "not supported yet",
    ),
    (
        bad_row(lambda r: r["messages"].insert(1, {"role": "function", "content": "42"})),
        "unsupported",
        "messages[1].role",
        "not supported yet",
    ),
    ('{"messages": 1' + "0" * 5000 + "}", "invalid_json", None, "digits"),
    ("[" * 100_000 + "]" * 100_000, "invalid_json", None, "nested too deeply"),
    ('{"messages": [], "id": NaN}', "invalid_json", None, "NaN"),
    (
        '{"messages": [{"role": "user", "content": "\\ud800 x"}, '
        '{"role": "assistant", "content": "fine"}]}',
        "invalid_utf8",
        None,
        "surrogate",
    ),
    ({"messages": [U], "[/bold]": 1}, "unknown_key", "[/bold]", "[/bold]"),
]


@pytest.mark.parametrize(("bad", "code", "field", "words"), BAD_ROWS)
def test_bad_row_is_reported_at_its_line_and_json_stays_valid(
    tmp_path, capsys, bad, code, field, words
):
    rows: list[Any] = chat_rows(12)
    rows[2] = bad
    path = write(tmp_path / "d.jsonl", rows)
    status, out, _ = run(["data", "validate", str(path), "--no-tokens", "--json"], capsys)
    assert status == 2
    report = json.loads(out)
    first = report["errors"][0]
    assert (first["line"], first["code"]) == (3, code)
    if field:
        assert first["field"] == field
    assert words in first["message"] or words in (first["field"] or "")
    assert report["rows_read"] == 12 and report["rows_rejected"] == 1
    # the human report and convert name the same line, without a traceback
    status, out, _ = run(["data", "validate", str(path), "--no-tokens"], capsys)
    assert status == 2 and f"{path}:3" in out
    dst = tmp_path / "out.jsonl"
    status, _, err = run(["data", "convert", str(path), str(dst)], capsys)
    assert status == 2 and f"{path}:3" in err and not dst.exists()


WHOLE_FILE = [
    ("empty.jsonl", b"", None, "too_few"),
    ("blank.jsonl", b"\n\n  \n\t\n", None, "too_few"),
    ("array.jsonl", json.dumps(chat_rows(12)).encode(), 1, "unreadable"),
    ("pretty.jsonl", json.dumps(chat_rows(12), indent=2).encode(), 1, "unreadable"),
    ("obj.json", json.dumps({"data": chat_rows(12)}, indent=2).encode(), 1, "unreadable"),
    ("cut.json", json.dumps(chat_rows(12)).encode()[:-40], 1, "unreadable"),
    ("empty.json", b"", 1, "unreadable"),
    ("garbage.json", bytes(range(128, 256)) * 4, 1, "unreadable"),
    ("bad.jsonl.gz", b"not gzip at all", None, "unreadable"),
    ("bad.parquet", lines(chat_rows(12)).encode(), None, "unreadable"),
    ("header.csv", b",\n1,2\n", 1, "unreadable"),
    ("utf16.jsonl", lines(chat_rows(12)).encode("utf-16"), None, "unreadable"),
    ("utf16.csv", "instruction,output\nq,a\n".encode("utf-16-le"), None, "unreadable"),
    ("text.jsonl", b"hello world\n" + lines(chat_rows(12)).encode(), 1, "unreadable"),
]


@pytest.mark.parametrize(
    ("name", "data", "line", "code"), WHOLE_FILE, ids=[w[0] for w in WHOLE_FILE]
)
def test_unreadable_files_give_one_error_and_valid_json(tmp_path, capsys, name, data, line, code):
    path = tmp_path / name
    path.write_bytes(data)
    status, out, err = run(["data", "validate", str(path), "--no-tokens", "--json"], capsys)
    assert status == 2
    report = json.loads(out)
    assert not report["ok"] and report["error_count"] == 1, report["errors"]
    assert report["errors"][0]["code"] == code and report["errors"][0]["line"] == line
    assert report["rows_read"] == report["rows_ok"] + report["rows_rejected"]
    dst = tmp_path / "out.jsonl"
    status, _, err = run(["data", "convert", str(path), str(dst)], capsys)
    assert status == 2 and str(path) in err and err.count("\n") == 1 and not dst.exists()


def test_cli_errors_before_reading_still_print_json(tmp_path, capsys):
    good = write(tmp_path / "d.jsonl", chat_rows(12))
    cases = [
        ([str(tmp_path / "missing.jsonl"), "--no-tokens"], "unreadable", "does not exist"),
        ([str(tmp_path), "--no-tokens"], "unreadable", "directory"),
        ([str(good), "--no-tokens", "--format", "bogus"], "unreadable", "unknown data format"),
        ([str(good), "--model", str(tmp_path / "nowhere")], "model", "no model"),
    ]
    for args, code, words in cases:
        status, out, _ = run(["data", "validate", *args, "--json"], capsys)
        report = json.loads(out)
        assert status == 2 and report["ok"] is False and report["error_count"] == 1
        assert report["errors"][0]["code"] == code and words in report["errors"][0]["message"]
        status, out, err = run(["data", "validate", *args], capsys)
        assert status == 2 and words in err and err.count("\n") == 1


def test_bom_crlf_and_huge_line_are_fine(tmp_path, capsys):
    rows = chat_rows(12)
    rows[5]["messages"][1]["content"] = "word " * 300_000
    text = lines(rows).replace("\n", "\r\n")
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    status, out, _ = run(["data", "validate", str(path), "--no-tokens", "--json"], capsys)
    assert status == 0 and json.loads(out)["rows_ok"] == 12
    train, val = tmp_path / "t.jsonl", tmp_path / "v.jsonl"
    split_file(path, fraction=0.25, train_out=train, validation_out=val)
    assert len(train.read_text().splitlines()) + len(val.read_text().splitlines()) == 12


def test_csv_bad_utf8_ragged_rows_and_long_cells_are_reported_per_row(tmp_path):
    body = b"".join(f"question {i},answer {i} here\n".encode() for i in range(12))
    path = tmp_path / "d.csv"
    path.write_bytes(
        b"instruction,output\n" + body + b"bad \xff byte,answer\n" + b"a,b,c\n" + b"lonely\n"
        b"long," + b"x" * 200_000 + b"\n"
    )
    report, _ = validate(path)
    got = [(e.line, e.code) for e in report.errors]
    assert got == [(14, "invalid_utf8"), (15, "invalid_csv"), (16, "invalid_csv")]
    assert report.rows_read == 16 and report.rows_ok == 13


def test_parquet_json_string_cells_and_wrong_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    good = tmp_path / "m.parquet"
    pq.write_table(pa.table({"messages": [json.dumps(r["messages"]) for r in chat_rows(12)]}), good)
    assert validate(good)[0].ok
    wrong = tmp_path / "w.parquet"
    pq.write_table(pa.table({"foo": [1, 2], "bar": ["a", "b"]}), wrong)
    report, _ = validate(wrong)  # one error for the file, not one per row
    assert [(e.line, e.code) for e in report.errors] == [(None, "unreadable")]
    assert "['foo', 'bar']" in report.errors[0].message
    typo = tmp_path / "t.parquet"
    pq.write_table(pa.table({"instruction": ["q"] * 12, "ouput": ["a"] * 12}), typo)
    report, _ = validate(typo)
    assert "no column 'output'" in report.errors[0].message
    assert "'output' (not 'ouput')" in (report.errors[0].hint or "")


def test_csv_without_a_needed_column_is_one_error_at_the_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("instruction,foo\n" + "".join(f"q{i},a{i}\n" for i in range(20)))
    report, _ = validate(path)
    assert [(e.line, e.code) for e in report.errors] == [(1, "unreadable")]
    assert "no column 'output'" in report.errors[0].message


def test_alpaca_input_that_starts_with_a_bracket_stays_text(tmp_path):
    path = tmp_path / "d.csv"
    body = "".join(f'do task {i},"[1, {i}] sort it",done {i} ok\n' for i in range(12))
    path.write_text("instruction,input,output\n" + body)
    records = list(read_records(path))
    assert records[0].messages[0].content == "do task 0\n\n[1, 0] sort it"


def test_sharegpt_weight_on_a_human_turn_is_an_error(tmp_path):
    rows = [
        {"conversations": [{"from": "human", "value": f"q {i}"}, {"from": "gpt", "value": "ok"}]}
        for i in range(12)
    ]
    rows[3]["conversations"][0]["weight"] = 1
    report, _ = validate(write(tmp_path / "d.jsonl", rows))
    assert [(e.line, e.code, e.field) for e in report.errors] == [
        (4, "bad_weight", "conversations[0].weight")
    ]


def test_split_of_a_one_line_json_array_keeps_the_split_it_reports(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(chat_rows(20)))  # every element is on line 1
    train, val = tmp_path / "t.jsonl", tmp_path / "v.jsonl"
    result = split_file(path, fraction=0.1, train_out=train, validation_out=val)
    assert (result.train_rows, result.validation_rows) == (18, 2)
    assert len(train.read_text().splitlines()) == 18 and len(val.read_text().splitlines()) == 2


def test_split_and_convert_refuse_bad_outputs_and_write_nothing(tmp_path, capsys):
    src = write(tmp_path / "d.jsonl", chat_rows(20))
    before = src.read_bytes()
    (tmp_path / "folder.jsonl").mkdir()
    keep = tmp_path / "keep.jsonl"
    keep.write_text("precious\n")
    cases = [
        (["split", str(src), "--train-out", str(src)], "is the input file"),
        (["split", str(src), "--val-out", f"{tmp_path}/./d.jsonl"], "is the input file"),
        (["split", str(src), "--train-out", str(keep), "--val-out", str(keep)], "same file"),
        (["split", str(src), "--train-out", str(tmp_path / "folder.jsonl")], "is a folder"),
        (["split", str(src), "--train-out", str(tmp_path / "t.csv")], "JSONL"),
        (["split", str(src), "--train-out", str(tmp_path / "no" / "t.jsonl")], "does not exist"),
        (["split", str(src), "--val", "0"], "between 0 and 1"),
        (["split", str(src), "--val", "1.5"], "between 0 and 1"),
        (["split", str(src), "--val", "-1"], "between 0 and 1"),
        (["split", str(src), "--val", "10"], "did you mean --val 0.1?"),
        (["split", str(src), "--val", "0.99"], "cannot hold out"),
        (["convert", str(src), str(src)], "is the input file"),
        (["convert", str(src), str(tmp_path / "no" / "x.jsonl")], "does not exist"),
        (["convert", str(src), str(tmp_path / "folder.jsonl")], "is a folder"),
        (["convert", str(src), str(keep), "--to", "alpaca"], "cannot convert to"),
        (["convert", str(src), str(keep), "--format", "bogus"], "unknown data format"),
    ]
    for argv, words in cases:
        status, _, err = run(["data", *argv], capsys)
        assert status == 2 and words in err and err.count("\n") == 1, (argv, err)
    assert src.read_bytes() == before and keep.read_text() == "precious\n"
    assert not (tmp_path / "no").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "folder.jsonl", "keep.jsonl"]


def test_failed_convert_leaves_an_existing_output_alone(tmp_path, capsys):
    rows: list[Any] = chat_rows(12)
    rows[9] = "{broken"
    src = write(tmp_path / "d.jsonl", rows)
    dst = tmp_path / "out.jsonl"
    dst.write_text("previous run\n")
    status, _, err = run(["data", "convert", str(src), str(dst)], capsys)
    assert status == 2 and f"{src}:10" in err
    assert dst.read_text() == "previous run\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_outputs_get_the_normal_file_mode(tmp_path):
    src = write(tmp_path / "d.jsonl", chat_rows(12))
    dst = tmp_path / "o.jsonl"
    convert_file(src, dst)
    mask = os.umask(0)
    os.umask(mask)
    assert dst.stat().st_mode & 0o777 == 0o666 & ~mask


def test_empty_input_is_an_error_for_convert_and_preview(tmp_path, capsys, tiny_model_dir):
    src = tmp_path / "e.jsonl"
    src.write_text("\n\n")
    with pytest.raises(DataError, match="no examples"):
        convert_file(src, tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()
    status, _, err = run(["data", "preview", str(src), "--model", str(tiny_model_dir)], capsys)
    assert status == 2 and "no examples" in err


def test_non_utf8_terminal_gets_ascii_not_a_crash(tmp_path, capsys, monkeypatch):
    rows = chat_rows(12)
    rows[0]["messages"][1]["content"] = "Grüß dich – schön 😀"
    src = write(tmp_path / "d.jsonl", rows)
    for argv in (
        ["data", "validate", str(src), "--no-tokens"],
        ["data", "validate", str(src), "--no-tokens", "--json"],
        ["data", "convert", str(src), str(tmp_path / "o.jsonl")],
        ["data", "split", str(src)],
    ):
        buf = io.BytesIO()
        out = io.TextIOWrapper(buf, encoding="ascii", write_through=True)
        monkeypatch.setattr(sys, "stdout", out)
        try:
            main(argv)
        except SystemExit as exc:
            assert not exc.code, argv
        finally:
            monkeypatch.undo()
        text = buf.getvalue().decode("ascii")
        assert "->" in text or "OK" in text or '"ok": true' in text
        if "--json" in argv:
            assert json.loads(text)["ok"] is True
    capsys.readouterr()


def test_jsonl_is_streamed_never_read_whole(tmp_path, monkeypatch):
    class LinesOnly(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:
            assert size is not None and size >= 0, "a JSONL file must not be read whole"
            return super().read(size)

    monkeypatch.setattr(readers, "_open_binary", lambda p: LinesOnly(io.FileIO(str(p))))
    path = write(tmp_path / "d.jsonl", chat_rows(12))
    report, _ = validate(path)
    assert report.ok and report.rows_read == 12


def test_a_huge_json_array_is_flagged(tmp_path, monkeypatch):
    import tunesmith.data.validate as validate_module

    monkeypatch.setattr(validate_module, "JSON_WHOLE_FILE_WARN_BYTES", 100)
    path = tmp_path / "d.json"
    path.write_text(json.dumps(chat_rows(12)))
    report, _ = validate(path)
    assert report.ok and [w.code for w in report.warnings] == ["large_json"]
    assert "convert" in (report.warnings[0].hint or "")


def test_row_accounting_holds_for_every_kind_of_rejection(tmp_path, tiny_tokenizer):
    rows: list[Any] = chat_rows(30)
    rows[1] = "{broken"
    rows[3] = "[1]"
    rows[5] = {"messages": [U]}
    rows[7] = rows[0]  # duplicate: a warning (kept), not a rejection
    rows[9] = {"messages": [U, {"role": "assistant", "content": "long " * 400}]}  # too long
    rows[11] = {"instruction": "x", "output": "y"}  # mixed format
    rows[13] = "\n"  # blank: not a row
    rows[15] = {"messages": [U, {"role": "assistant", "content": "hi <|im_end|>"}]}
    rows[17] = '{"messages": [], "id": Infinity}'
    path = write(tmp_path / "d.jsonl", rows)
    val_rows = [chat_row(100 + i) for i in range(4)] + [rows[2], "{bad"]
    val = write(tmp_path / "v.jsonl", val_rows)
    report, _ = validate(path, tiny_tokenizer, validation=val, max_seq_len=256)
    for f in report.files:
        assert f.rows_read == f.rows_ok + f.rows_rejected
    assert report.files[0].rows_read == 29 and report.files[0].rows_rejected == 7
    assert [(w.line, w.code) for w in report.warnings if w.code == "duplicate"] == [
        (8, "duplicate")
    ]
    assert report.files[1].rows_read == 6 and report.files[1].rows_rejected == 2
    rejected_lines = {(e.path, e.line) for e in report.errors if e.line is not None}
    assert len(rejected_lines) == report.rows_rejected
    data = prepare_sft(path, tiny_tokenizer, validation=val, max_seq_len=256, skip_invalid=True)
    rep = data.report
    assert rep.rows_read == len(data.train) + len(data.validation) + rep.rows_rejected


def test_unreadable_tail_is_never_trained_on_in_part(tmp_path, tiny_tokenizer):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(chat_rows(30), indent=1)[:-200])
    with pytest.raises(DataError, match=r"JSON array|invalid JSON"):
        prepare_sft(path, tiny_tokenizer, skip_invalid=True)


def test_truncated_gzip_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(lines(chat_rows(200)).encode())[:-50])
    report, _ = validate(path)
    assert report.error_codes == {"unreadable": 1}
    assert report.rows_read == report.rows_ok + report.rows_rejected
    with pytest.raises(DataError, match="gzip"):
        list(iter_rows(path))


def test_bad_options_fail_fast_with_one_line_and_json(tmp_path, capsys):
    good = write(tmp_path / "d.jsonl", chat_rows(12))
    missing_model = str(tmp_path / "no-model")
    cases = [
        (["validate", str(good), "--no-tokens", "--max-seq-len", "0"], "at least 8"),
        (["validate", str(good), "--no-tokens", "--train-on", "bogus"], "train_on"),
        # option and file problems are found before the (missing) model is even looked at
        (["validate", str(good), "--model", missing_model, "--format", "x"], "unknown data"),
        (["validate", str(tmp_path / "nope.jsonl"), "--model", missing_model], "does not exist"),
        (["preview", str(good), "--model", missing_model, "--n", "0"], "at least 1"),
        (["preview", str(tmp_path / "nope.jsonl"), "--model", missing_model], "does not exist"),
    ]
    for argv, words in cases:
        status, _, err = run(["data", *argv], capsys)
        assert status == 2 and words in err and err.count("\n") == 1, (argv, err)
    status, out, _ = run(
        ["data", "validate", str(good), "--no-tokens", "--max-seq-len", "-5", "--json"], capsys
    )
    assert status == 2 and json.loads(out)["errors"][0]["code"] == "config"


def test_a_broken_model_folder_is_a_user_error(tmp_path, capsys):
    good = write(tmp_path / "d.jsonl", chat_rows(12))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("garbage{")
    fake = tmp_path / "fake.gguf"
    fake.write_text("not gguf")
    # each names the file at fault and what is wrong with it (models/load.py, registry.py)
    for model, says in ((broken, "config.json is not readable JSON"), (fake, "not a GGUF file")):
        status, _, err = run(["data", "validate", str(good), "--model", str(model)], capsys)
        assert status == 2 and says in err and str(model.name) in err
        status, out, _ = run(
            ["data", "validate", str(good), "--model", str(model), "--json"], capsys
        )
        assert status == 2 and json.loads(out)["errors"][0]["code"] == "model"


def test_common_mistakes_get_a_hint(tmp_path):
    rows: list[Any] = chat_rows(12)
    rows[0] = {"mesages": [U]}
    rows[1] = json.dumps(chat_row(50)) + ","
    rows[2] = str(chat_row(51))  # a Python dict repr
    report, _ = validate(write(tmp_path / "d.jsonl", rows))
    hints = {e.line: (e.message, e.hint) for e in report.errors}
    assert "'messages' (not 'mesages')" in (hints[1][1] or "")
    assert "trailing comma" in hints[2][0]
    assert "double quotes" in hints[3][0]
    tsv = tmp_path / "d.csv"
    tsv.write_text("instruction\toutput\nq\ta\n")
    report, _ = validate(tsv)
    assert report.errors[0].code == "unreadable" and "tabs" in report.errors[0].message


def test_validation_file_equal_to_training_file_is_one_clear_error(tmp_path, capsys):
    good = write(tmp_path / "d.jsonl", chat_rows(12))
    status, _, err = run(
        ["data", "validate", str(good), "--no-tokens", "--val", f"{tmp_path}/./d.jsonl"], capsys
    )
    assert status == 2 and "the validation file is the training file" in err
    assert err.count("\n") == 1


def test_a_csv_or_text_file_named_jsonl_is_one_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbfinstruction,output\r\n" + b"q,a\r\n" * 20)
    report, _ = validate(path)
    assert [(e.line, e.code) for e in report.errors] == [(1, "unreadable")]
    assert "not JSON" in report.errors[0].message and ".csv" in (report.errors[0].hint or "")
