"""Readers keep the 1-based line (or row) of every record, in every container."""

from __future__ import annotations

import csv
import gzip
import json

import pytest

from tunesmith.data.prepare import read_records
from tunesmith.data.readers import iter_rows
from tunesmith.errors import DataError

ROW = {"prompt": "What is two plus two?", "completion": "Four."}


def test_jsonl_skips_blank_lines_but_keeps_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join([json.dumps(ROW), "", json.dumps(ROW), "  ", "[1, 2]", "{bad"]))
    rows = list(iter_rows(path))
    assert [r.source.line for r in rows] == [1, 3, 5, 6]
    assert rows[0].obj == ROW and rows[1].error is None
    assert rows[2].error == "not a JSON object (got an array)"
    assert rows[3].error.startswith("invalid JSON")


def test_jsonl_bad_utf8_and_bom(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROW).encode() + b"\n" + b'{"prompt": "\xff"}\n')
    rows = list(iter_rows(path))
    assert rows[0].obj == ROW
    assert rows[1].source.line == 2 and "UTF-8" in rows[1].error


def test_gzipped_jsonl(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(ROW) + "\n" + json.dumps(ROW) + "\n")
    assert [r.source.line for r in read_records(path)] == [1, 2]


def test_json_array_line_numbers(tmp_path):
    path = tmp_path / "d.json"
    text = "[\n" + json.dumps(ROW) + ",\n\n" + json.dumps(ROW, indent=2) + ",\n" + json.dumps(ROW)
    path.write_text(text + "\n]\n")
    assert [r.source.line for r in read_records(path)] == [2, 4, 8]


def test_json_array_errors_name_a_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("[\n" + json.dumps(ROW) + ",\n" + '{"prompt": oops}' + "\n]")
    with pytest.raises(DataError) as info:
        list(iter_rows(path))
    assert info.value.where.endswith("d.json:3")
    path.write_text('{"data": []}\n{"x": 1}')  # JSONL named .json is read as JSONL
    assert [r.source.line for r in iter_rows(path)] == [1, 2]
    path.write_text('"just a string"')
    with pytest.raises(DataError, match="array of examples"):
        list(iter_rows(path))


def test_csv_rows_keep_their_starting_line(tmp_path):
    path = tmp_path / "d.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "completion"])
        w.writerow(["one line", "answer"])
        w.writerow(["two\nlines", "answer"])
        w.writerow(["after", "answer"])
    recs = list(read_records(path))
    assert [r.source.line for r in recs] == [2, 3, 5]
    assert recs[1].messages[0].content == "two\nlines"


def test_csv_messages_column_holds_json(tmp_path):
    path = tmp_path / "d.csv"
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["messages"])
        w.writerow([json.dumps(msgs)])
        w.writerow(["[not json"])
    rows = list(iter_rows(path))
    assert rows[0].obj == {"messages": msgs}
    assert rows[1].source.line == 3 and rows[1].field == "messages"


def test_csv_wrong_cell_count(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,completion\nq,a\nq,a,extra\n")
    rows = list(iter_rows(path))
    assert rows[1].source.line == 3 and "3 cells" in rows[1].error


def test_parquet_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    table = pa.table(
        {"instruction": ["a", "b", "c"], "input": ["", "x", ""], "output": ["1", "2", "3"]}
    )
    pq.write_table(table, path)
    recs = list(read_records(path))
    assert [r.source.line for r in recs] == [1, 2, 3]
    assert recs[1].messages[0].content == "b\n\nx"


def test_unknown_extension_and_missing_file(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("x")
    with pytest.raises(DataError, match="file type"):
        list(iter_rows(path))
    with pytest.raises(DataError, match="does not exist"):
        list(iter_rows(tmp_path / "nope.jsonl"))


def test_progress_reports_bytes_up_to_the_total(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text((json.dumps(ROW) + "\n") * 5000)
    calls: list[tuple[int, int]] = []
    assert sum(1 for _ in iter_rows(path, lambda d, t: calls.append((d, t)))) == 5000
    total = path.stat().st_size
    assert len(calls) >= 3 and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_a_line_longer_than_a_row_may_be_is_never_read_whole(tmp_path, monkeypatch):
    from tunesmith.data import readers

    monkeypatch.setattr(readers, "MAX_ROW_BYTES", 1 << 16)
    path = tmp_path / "d.jsonl"
    huge = json.dumps({"prompt": "x" * (3 << 20), "completion": "y"})  # 3 MiB on one line
    path.write_text("\n".join([json.dumps(ROW), huge, json.dumps(ROW), huge]))  # no final \n
    real_readline = readers.io.BufferedReader.readline
    biggest = [0]

    class Spy(readers.io.BufferedReader):
        def readline(self, size=-1):
            line = real_readline(self, size)
            biggest[0] = max(biggest[0], len(line))
            return line

    monkeypatch.setattr(readers, "_open_binary", lambda p: Spy(readers.io.FileIO(str(p))))
    rows = list(iter_rows(path))
    assert [r.source.line for r in rows] == [1, 2, 3, 4]
    assert rows[0].obj == ROW and rows[2].obj == ROW
    for bad in (rows[1], rows[3]):
        assert bad.code == "too_long" and bad.error.startswith("line is 3.0 MiB, more than")
    assert biggest[0] <= 1 << 20  # read in pieces, never held whole
