"""Readers: turn a data file into a stream of raw rows, each with its 1-based line (or row).

Why a separate layer: the format converters and the validator must never care whether the user
wrote JSONL, a JSON array, CSV or Parquet, and every later error must still be able to say
"file:line". Readers do not interpret keys; they only yield `RawRow(source, obj, error)` where a
row that could not be parsed (invalid JSON, bad UTF-8, not an object) carries an `error` instead
of raising, so the validator can report *every* bad row instead of the first.

JSONL (also `.jsonl.gz`) is streamed line by line in binary, so a multi-GB file is never loaded
whole, and no line is read into memory beyond `MAX_ROW_BYTES`: a longer line (no training
example is that long) is skipped to its end and reported as a `too_long` row, so one huge line
cannot exhaust memory. CSV fields have the same bound. A JSON array is parsed element by
element from the text (it has to be read whole; use JSONL for very large data: the validator
warns above `JSON_WHOLE_FILE_WARN_BYTES`). CSV rows are
plain string dicts; a `messages`/`conversations` cell that holds JSON is decoded (also in
Parquet string columns). Parquet is read in record batches through pyarrow (optional extra).

A problem that stops the whole file from being read (a missing file, a corrupt gzip stream, an
unclosed JSON array, a pretty-printed JSON document in a `.jsonl`) raises `RowError` with code
`unreadable`, naming the file and, where known, the line; per-row problems never raise.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tunesmith.data.formats import KEYS, META_KEYS, RowError, detect_format, did_you_mean
from tunesmith.data.records import Source

# (bytes_done, bytes_total): the readers' hook; `validate` turns it into `progress` events.
Progress = Callable[[int, int], None]

_PYTHON_LITERAL = re.compile(r"[:\[,]\s*(True|False|None)\s*[,}\]]")
JSON_WHOLE_FILE_WARN_BYTES = 256 << 20  # a .json array this big is read whole: say so
# The longest row read into memory (~4M tokens of text, far past any max_seq_len): parsing a
# row costs several times its size, tokenizing it far more.
MAX_ROW_BYTES = 16 << 20
CSV_FIELD_LIMIT = MAX_ROW_BYTES  # the csv module's default (128 KiB) rejects long documents

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
    code: str = "invalid_json"  # the issue code when `error` is set


def unreadable(
    message: str, path: Path | str, line: int | None = None, hint: str | None = None
) -> RowError:
    """The error for a file that cannot be read (on from `line`, when given)."""
    source = Source(str(path), line) if line is not None else None
    return RowError("unreadable", message, source, hint=hint, path=str(path))


def file_kind(path: Path) -> str:
    """The container kind from the file name (`.gz` is looked through)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, kind in SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    raise unreadable(
        f"cannot tell the file type of '{path.name}'",
        path,
        hint="use .jsonl (one JSON object per line), .json, .csv or .parquet",
    )


def _open_binary(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def check_file(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise unreadable("the data file does not exist", path)
    if path.is_dir():
        raise unreadable("is a directory, not a data file", path)
    if not path.is_file():
        raise unreadable("is not a regular file", path)
    return path


def iter_rows(path: Path, progress: Progress | None = None) -> Iterator[RawRow]:
    """Yield every row of `path` in order, with its 1-based line (JSON/CSV) or row (Parquet)."""
    path = check_file(Path(path))
    kind = file_kind(path)
    readers = {"jsonl": _iter_jsonl, "json": _iter_json, "csv": _iter_csv}
    try:
        if kind != "parquet":
            _check_text_encoding(path)
        yield from readers.get(kind, _iter_parquet)(path, progress)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise unreadable(
            f"not a valid gzip file ({exc or 'cut short'})", path, hint="re-compress it"
        ) from None
    except OSError as exc:
        raise unreadable(f"cannot read the file: {exc.strerror or exc}", path) from None


def _check_text_encoding(path: Path) -> None:
    """UTF-16 (what some Windows editors call "Unicode") would fail on every line: say it once."""
    with _open_binary(path) as f:
        head = f.read(4)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(head) == 4 and head[1::2] == b"\0\0"):
        raise unreadable(
            "the file is UTF-16 encoded, not UTF-8", path, hint="save it as UTF-8 and try again"
        )


def _bounded_lines(f: IO[bytes], limit: int) -> Iterator[tuple[bytes | None, int]]:
    """(line, its length) for each line; (None, length) for a line longer than `limit`, which
    is read past in pieces and never held whole."""
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield raw, len(raw)
            continue
        size = len(raw)
        del raw
        while piece := f.readline(1 << 20):
            size += len(piece)
            if piece.endswith(b"\n"):
                break
        yield None, size


def _iter_jsonl(path: Path, progress: Progress | None) -> Iterator[RawRow]:
    total = path.stat().st_size
    done = 0
    name = str(path)
    first = True
    with _open_binary(path) as f:
        for number, (raw, size) in enumerate(_bounded_lines(f, MAX_ROW_BYTES), start=1):
            done += size
            if progress is not None and number % 2048 == 0:
                progress(min(done, total), total)
            if raw is None:
                first = False
                yield RawRow(
                    Source(name, number),
                    error=f"line is {size / (1 << 20):.1f} MiB, more than the "
                    f"{MAX_ROW_BYTES >> 20} MiB a row may be; not read",
                    code="too_long",
                )
                continue
            if not raw.strip():
                continue  # blank lines are not rows (a trailing newline is common)
            row = _parse_json_line(raw, Source(name, number))
            if first:
                _check_first_jsonl_row(row, raw, path)
                first = False
            yield row
    if progress is not None:
        progress(total, total)


def _check_first_jsonl_row(row: RawRow, raw: bytes, path: Path) -> None:
    """A JSON array or a pretty-printed document saved as .jsonl would give one confusing error
    per line; name the real problem once instead."""
    stripped = raw.removeprefix(b"\xef\xbb\xbf").strip()
    array = row.code == "not_object" and (row.error or "").endswith("(got an array)")
    broken = row.code == "invalid_json" and (stripped[:1] == b"[" or stripped == b"{")
    if row.code == "invalid_json" and stripped[:1].isalnum():
        head = stripped[:40].decode("utf-8", "replace")
        raise unreadable(
            f"line 1 is not JSON (it starts {head!r}): this does not look like a JSONL file",
            path,
            row.source.line,
            hint="name a CSV file .csv; JSONL has one JSON object per line",
        )
    if array or broken:
        raise unreadable(
            "this is one JSON document (an array or a pretty-printed object), not JSONL "
            "(one JSON object per line)",
            path,
            row.source.line,
            hint="name the file .json if it holds a JSON array of examples, "
            "or write one example per line",
        )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str) -> Any:
    """`json.loads` that refuses NaN/Infinity (not JSON; they would break every writer)."""
    return json.loads(text, parse_constant=_no_constants)


def json_problem(exc: BaseException) -> str:
    """A one-line reason for a JSON value that could not be parsed."""
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} (column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "invalid JSON: nested too deeply"
    text = str(exc).split(";")[0]
    return f"invalid JSON: {text}"


def _parse_json_line(raw: bytes, source: Source) -> RawRow:
    try:
        text = raw.decode("utf-8-sig" if source.line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return RawRow(source, error=f"not valid UTF-8 (byte {exc.start})", code="invalid_utf8")
    try:
        obj = loads(text)
    except (ValueError, RecursionError) as exc:
        return RawRow(source, error=json_problem(exc) + _json_hint(text))
    return _checked(obj, source, text)


def _json_hint(text: str) -> str:
    """A guess at the usual causes of a bad JSON line (only computed for bad lines)."""
    body = text.strip()
    if body.endswith(","):
        try:
            loads(body[:-1])
            return "; remove the trailing comma (JSONL has no commas between lines)"
        except (ValueError, RecursionError):
            pass
    if body.startswith("{'") or _PYTHON_LITERAL.search(body):
        return "; JSON needs double quotes and true/false/null (this looks like a Python dict)"
    return ""


def _checked(obj: Any, source: Source, text: str) -> RawRow:
    if not isinstance(obj, dict):
        return RawRow(source, error=f"not a JSON object (got {_json_type(obj)})", code="not_object")
    if "\\ud" in text.lower() and has_lone_surrogate(obj):
        return RawRow(
            source,
            error="holds a lone UTF-16 surrogate escape (like \\ud800), which is not valid "
            "Unicode text",
            code="invalid_utf8",
        )
    return RawRow(source, obj=obj)


def has_lone_surrogate(obj: Any) -> bool:
    """True when a string anywhere in `obj` cannot be encoded as UTF-8 (a lone surrogate)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (TypeError, ValueError):
        return False
    return False


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
        line = 1 + data.count(b"\n", 0, exc.start)
        raise unreadable(
            f"file is not valid UTF-8 (byte {exc.start})", path, line, hint="save it as UTF-8"
        ) from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        yield from _json_object_file(text, data, path)
        return
    if not stripped.startswith("["):
        raise unreadable(
            "a .json data file must hold an array of examples"
            + ("" if stripped else " (the file is empty)"),
            path,
            1,
            hint="or write one JSON object per line in a .jsonl file",
        )
    decoder = json.JSONDecoder(parse_constant=_no_constants)
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
            raise unreadable("the JSON array is not closed (missing ']')", path, line)
        if text[pos] == "]":
            break
        if count:
            if text[pos] != ",":
                raise unreadable("expected ',' between array elements", path, line)
            pos = skip(pos + 1)
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise unreadable(
                f"invalid JSON in the array: {exc.msg}",
                path,
                exc.lineno,
                hint="the rest of a JSON array cannot be read past this point; JSONL can",
            ) from None
        except (ValueError, RecursionError) as exc:
            raise unreadable(
                f"{json_problem(exc)} in the array element",
                path,
                line,
                hint="the rest of a JSON array cannot be read past this point; JSONL can",
            ) from None
        yield _checked(obj, Source(name, line), text[pos:end])
        count += 1
        line += text.count("\n", pos, end)
        pos = end
        if progress is not None and count % 2048 == 0:
            progress(pos, total)
    if progress is not None:
        progress(total, total)


def _json_object_file(text: str, data: bytes, path: Path) -> Iterator[RawRow]:
    """A .json file that starts with '{': one (maybe pretty-printed) example, a wrapper object
    such as {"data": [...]}, or JSONL under a .json name (one object per line works the same)."""
    try:
        whole = loads(text)
    except (ValueError, RecursionError):
        whole = None
    if isinstance(whole, dict):
        lists = [
            k
            for k, v in whole.items()
            if k not in ("messages", "conversations")
            and _list_of_objects(v)
            and detect_format(v[0])
        ]
        if lists:
            raise unreadable(
                f"the examples are inside the key '{lists[0]}'; a .json data file must hold a "
                "top-level array of examples",
                path,
                1,
                hint=f"save just the list under '{lists[0]}', or write one example per line "
                "in a .jsonl file",
            )
        yield _checked(whole, Source(str(path), 1), text)
        return
    for number, raw in enumerate(io.BytesIO(data), start=1):
        if raw.strip():
            yield _parse_json_line(raw, Source(str(path), number))


def _list_of_objects(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _iter_csv(path: Path, progress: Progress | None) -> Iterator[RawRow]:
    name = str(path)
    total = path.stat().st_size
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    with _open_binary(path) as fb:
        # surrogateescape: a bad byte becomes a marker in its row (reported there) instead of
        # failing the whole file at whichever chunk the decoder happened to be reading.
        f = io.TextIOWrapper(fb, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise unreadable(f"cannot read the CSV header: {exc}", path, 1) from None
        header = [h.strip() for h in header]
        if len(header) == 1 and ("\t" in header[0] or ";" in header[0]):
            sep = "tabs" if "\t" in header[0] else "semicolons"
            raise unreadable(
                f"the CSV header is one column {header[0]!r}: the file seems separated by {sep}",
                path,
                1,
                hint="save it comma-separated, or convert it to JSONL",
            )
        if _bad_utf8(header):
            raise unreadable("the CSV header is not valid UTF-8", path, 1, hint="save as UTF-8")
        if any(not h for h in header):
            blank = header.index("") + 1
            raise unreadable(f"column {blank} of the CSV header has no name", path, 1)
        if len(set(header)) != len(header):
            twice = sorted({h for h in header if header.count(h) > 1})
            raise unreadable(f"the CSV header repeats the column(s) {twice}", path, 1)
        _check_columns(header, path, "CSV header")
        start = reader.line_num + 1
        rows = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                yield RawRow(Source(name, start), error=f"malformed CSV: {exc}", code="invalid_csv")
                start = reader.line_num + 1
                continue
            source = Source(name, start)
            start = reader.line_num + 1
            if not cells or all(not c.strip() for c in cells):
                continue
            rows += 1
            if progress is not None and rows % 2048 == 0:
                progress(min(fb.tell(), total), total)
            if _bad_utf8(cells):
                yield RawRow(source, error="not valid UTF-8", code="invalid_utf8")
                continue
            if len(cells) != len(header):
                yield RawRow(
                    source,
                    error=f"has {len(cells)} cells but the header has {len(header)} columns",
                    code="invalid_csv",
                )
                continue
            yield _csv_row(dict(zip(header, cells, strict=True)), source)
    if progress is not None:
        progress(total, total)


def _check_columns(columns: list[str], path: Path, what: str) -> None:
    """Columns that match no format would fail every row the same way: say it once."""
    columns = [c for c in columns if c not in META_KEYS]
    fmt = detect_format(dict.fromkeys(columns))
    if fmt is not None:
        missing = sorted(KEYS[fmt][0] - set(columns))
        if missing:
            raise unreadable(
                f"the {what} has no column {missing[0]!r} (format {fmt} needs "
                f"{', '.join(sorted(KEYS[fmt][0]))}; found {columns[:8]})",
                path,
                1 if what.startswith("CSV") else None,
                hint=did_you_mean(dict.fromkeys(columns)),
            )
        return
    raise unreadable(
        f"the {what} has the columns {columns[:8]}, which match no data format",
        path,
        1 if what.startswith("CSV") else None,
        hint=did_you_mean(dict.fromkeys(columns))
        or "expected e.g. messages, instruction/output, prompt/completion, input/output, "
        "conversations, prompt/chosen/rejected",
    )


def _bad_utf8(cells: list[str]) -> bool:
    """True when surrogateescape decoding left a marker (a byte that is not UTF-8)."""
    for cell in cells:
        if not cell.isascii():
            try:
                cell.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def _csv_row(obj: dict[str, Any], source: Source) -> RawRow:
    """Decode the cells that hold JSON (a `messages` list in a CSV or Parquet string column)."""
    for key in JSON_CELL_COLUMNS:
        value = obj.get(key)
        if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
            try:
                decoded = loads(value)
            except (ValueError, RecursionError) as exc:
                if key == "input":
                    continue  # alpaca / input-output text that happens to start with a bracket
                problem = json_problem(exc).removeprefix("invalid JSON: ")
                return RawRow(source, error=f"cell is not valid JSON: {problem}", field=key)
            if key == "input" and not (isinstance(decoded, dict) and "messages" in decoded):
                continue  # only OpenAI DPO's {"messages": [...]} input is JSON
            obj[key] = decoded
            if has_lone_surrogate(obj[key]):
                return RawRow(
                    source, error="holds a lone UTF-16 surrogate", field=key, code="invalid_utf8"
                )
    return RawRow(source, obj=obj)


def _iter_parquet(path: Path, progress: Progress | None) -> Iterator[RawRow]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise unreadable(
            "reading Parquet needs pyarrow", path, hint="pip install 'tunesmith[parquet]'"
        ) from None
    name = str(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises many types for a file that is not Parquet
        raise unreadable(f"not a readable Parquet file: {_first_line(exc)}", path) from None
    _check_columns(list(pf.schema_arrow.names), path, "Parquet file")
    total = pf.metadata.num_rows
    row = 0
    batches = pf.iter_batches(batch_size=4096)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except Exception as exc:  # a corrupt page / unsupported type mid-file
            raise unreadable(
                f"cannot read the Parquet data after row {row}: {_first_line(exc)}", path
            ) from None
        for obj in batch.to_pylist():
            row += 1
            yield _csv_row(_plain(obj), Source(name, row))
        if progress is not None:
            progress(row, total)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _plain(value: Any) -> Any:
    """Parquet gives nested structs as dicts with every schema key; drop the null ones."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
