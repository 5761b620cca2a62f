"""Readers: turn a data file into a stream of raw rows, each with its 1-based line (or row).

Why a separate layer: the format converters and the validator must never care whether the user
wrote JSONL, a JSON array, CSV or Parquet, and every later error must still be able to say
"file:line". Readers do not interpret keys; they only yield `RawRow(source, obj, error)` where a
row that could not be parsed (invalid JSON, bad UTF-8, not an object) carries an `error` instead
of raising, so the validator can report *every* bad row instead of the first.

JSONL (also `.jsonl.gz`) is streamed line by line in binary, so a multi-GB file is never loaded
whole. A JSON array is parsed element by element from the text (it has to be read whole; use
JSONL for very large data). CSV rows are plain string dicts; a `messages`/`conversations` cell
that holds JSON is decoded. Parquet is read in record batches through pyarrow (optional extra).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tunesmith.data.records import Source
from tunesmith.errors import DataError

Progress = Callable[[int, int], None]  # (bytes_done, bytes_total)

SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
JSON_CELL_COLUMNS = (
    "messages",
    "conversations",
    "input",
    "preferred_output",
    "non_preferred_output",
)


@dataclass
class RawRow:
    """One row as read: a parsed JSON value (`obj`) or the reason it could not be parsed."""

    source: Source
    obj: Any = None
    error: str | None = None
    field: str | None = None


def file_kind(path: Path) -> str:
    """The container kind from the file name (`.gz` is looked through)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, kind in SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    raise DataError(
        f"cannot tell the file type of '{path.name}'",
        where=str(path),
        hint="use .jsonl (one JSON object per line), .json, .csv or .parquet",
    )


def _open_binary(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def check_file(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError("the data file does not exist", where=str(path))
    if path.is_dir():
        raise DataError("is a directory, not a data file", where=str(path))
    return path


def iter_rows(path: Path, progress: Progress | None = None) -> Iterator[RawRow]:
    """Yield every row of `path` in order, with its 1-based line (JSON/CSV) or row (Parquet)."""
    path = check_file(Path(path))
    kind = file_kind(path)
    if kind == "jsonl":
        yield from _iter_jsonl(path, progress)
    elif kind == "json":
        yield from _iter_json(path, progress)
    elif kind == "csv":
        yield from _iter_csv(path, progress)
    else:
        yield from _iter_parquet(path, progress)


def _iter_jsonl(path: Path, progress: Progress | None) -> Iterator[RawRow]:
    total = path.stat().st_size
    done = 0
    name = str(path)
    with _open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            done += len(raw)
            if progress is not None and number % 2048 == 0:
                progress(min(done, total), total)
            if not raw.strip():
                continue  # blank lines are not rows (a trailing newline is common)
            yield _parse_json_line(raw, Source(name, number))
    if progress is not None:
        progress(total, total)


def _parse_json_line(raw: bytes, source: Source) -> RawRow:
    try:
        text = raw.decode("utf-8-sig" if source.line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return RawRow(source, error=f"not valid UTF-8 (byte {exc.start})")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return RawRow(source, error=f"invalid JSON: {exc.msg} (column {exc.colno})")
    if not isinstance(obj, dict):
        return RawRow(source, error=f"not a JSON object (got {_json_type(obj)})")
    return RawRow(source, obj=obj)


def _json_type(obj: Any) -> str:
    return {
        list: "an array",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
        int: "a number",
        float: "a number",
    }.get(type(obj), type(obj).__name__)


def _iter_json(path: Path, progress: Progress | None) -> Iterator[RawRow]:
    name = str(path)
    with _open_binary(path) as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"file is not valid UTF-8 (byte {exc.start})", where=name) from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        # Many people name JSONL files `.json`: one object per line works the same.
        lines = io.BytesIO(data)
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                yield _parse_json_line(raw, Source(name, number))
        return
    if not stripped.startswith("["):
        raise DataError(
            "a .json data file must hold an array of examples",
            where=f"{name}:1",
            hint="or write one JSON object per line in a .jsonl file",
        )
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    line = 1 + text.count("\n", 0, pos)
    total = len(text)
    count = 0

    def skip(p: int) -> int:
        nonlocal line
        q = _skip_ws(text, p)
        line += text.count("\n", p, q)
        return q

    while True:
        pos = skip(pos)
        if pos >= total:
            raise DataError("the JSON array is not closed (missing ']')", where=f"{name}:{line}")
        if text[pos] == "]":
            break
        if count:
            if text[pos] != ",":
                raise DataError("expected ',' between array elements", where=f"{name}:{line}")
            pos = skip(pos + 1)
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"invalid JSON in the array: {exc.msg}",
                where=f"{name}:{exc.lineno}",
                hint="the rest of a JSON array cannot be read past this point; JSONL can",
            ) from None
        source = Source(name, line)
        if isinstance(obj, dict):
            yield RawRow(source, obj=obj)
        else:
            yield RawRow(source, error=f"not a JSON object (got {_json_type(obj)})")
        count += 1
        line += text.count("\n", pos, end)
        pos = end
        if progress is not None and count % 2048 == 0:
            progress(pos, total)
    if progress is not None:
        progress(total, total)


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _iter_csv(path: Path, progress: Progress | None) -> Iterator[RawRow]:
    name = str(path)
    total = path.stat().st_size
    with _open_binary(path) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8-sig", newline="")
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read the CSV header: {exc}", where=f"{name}:1") from None
        header = [h.strip() for h in header]
        if len(set(header)) != len(header):
            raise DataError(f"the CSV header repeats a column: {header}", where=f"{name}:1")
        start = reader.line_num + 1
        rows = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except UnicodeDecodeError as exc:
                yield RawRow(Source(name, start), error=f"not valid UTF-8 (byte {exc.start})")
                return
            except csv.Error as exc:
                yield RawRow(Source(name, start), error=f"malformed CSV: {exc}")
                start = reader.line_num + 1
                continue
            source = Source(name, start)
            start = reader.line_num + 1
            if not cells or all(not c.strip() for c in cells):
                continue
            rows += 1
            if progress is not None and rows % 2048 == 0:
                progress(min(fb.tell(), total), total)
            if len(cells) != len(header):
                yield RawRow(
                    source, error=f"has {len(cells)} cells but the header has {len(header)} columns"
                )
                continue
            yield _csv_row(dict(zip(header, cells, strict=True)), source)
    if progress is not None:
        progress(total, total)


def _csv_row(obj: dict[str, Any], source: Source) -> RawRow:
    for key in JSON_CELL_COLUMNS:
        value = obj.get(key)
        if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
            try:
                obj[key] = json.loads(value)
            except json.JSONDecodeError as exc:
                return RawRow(source, error=f"cell is not valid JSON: {exc.msg}", field=key)
    return RawRow(source, obj=obj)


def _iter_parquet(path: Path, progress: Progress | None) -> Iterator[RawRow]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            "reading Parquet needs pyarrow",
            where=str(path),
            hint="pip install 'tunesmith[parquet]'",
        ) from None
    name = str(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise DataError(f"not a readable Parquet file: {exc}", where=name) from None
    total = pf.metadata.num_rows
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        for obj in batch.to_pylist():
            row += 1
            yield RawRow(Source(name, row), obj=_plain(obj))
        if progress is not None:
            progress(row, total)


def _plain(value: Any) -> Any:
    """Parquet gives nested structs as dicts with every schema key; drop the null ones."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
