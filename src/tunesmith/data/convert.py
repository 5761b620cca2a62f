"""Convert a data file in any supported format to canonical OpenAI chat JSONL.

Why: a user who converts once gets a file every other tool (and OpenAI's API) reads, and sees
exactly what tunesmith will train on. Conversations become `{"messages": [...]}` (weights kept;
prompt/completion data gets `weight: 0` on all but the final answer, so the meaning survives);
preference pairs become OpenAI's DPO format. All rows are checked first: if any row is bad,
nothing is written and the error names every bad line (up to the first few, with a count).
Output is written to a temp file beside the target and renamed, so it is never half-written.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tunesmith.data.formats import normalize_format, record_to_json
from tunesmith.data.readers import iter_rows
from tunesmith.data.validate import FileReport, ValidationReport, _records
from tunesmith.errors import DataError

TARGETS = ("chat",)


@dataclass
class ConvertResult:
    path: Path
    rows_read: int
    rows_written: int
    format: str | None


@contextmanager
def atomic_writer(path: Path) -> Iterator[IO[str]]:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def raise_if_errors(report: ValidationReport) -> None:
    if not report.error_count:
        return
    first = report.errors[0]
    shown = "; ".join(f"line {e.line}: {e.message}" for e in report.errors[1:4])
    more = f" (also {shown}" + (" ..." if report.error_count > 4 else "") + ")" if shown else ""
    field = f"{first.field}: " if first.field else ""
    raise DataError(
        f"{report.error_count} bad row(s); {field}{first.message}{more}",
        where=first.where,
        hint="run `tunesmith data validate` for the full report",
    )


def convert_file(src: Path, dst: Path, *, to: str = "chat", format: str | None = None):
    """Convert `src` to canonical chat JSONL at `dst` (see the module docstring)."""
    if to not in TARGETS:
        raise DataError(f"cannot convert to '{to}'", hint=f"use one of: {', '.join(TARGETS)}")
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise DataError(
            "the output file is the input file", where=str(dst), hint="write to a new file"
        )
    if not dst.name.lower().endswith(".jsonl"):
        raise DataError(
            "the output of convert is JSONL", where=str(dst), hint="name the output file *.jsonl"
        )
    fmt = normalize_format(format)
    report = ValidationReport(settings={})
    frep = FileReport("input", str(src), format=fmt)
    report.files.append(frep)
    written = 0
    # Stream: good rows go to the temp file as they come; any bad row discards it at the end.
    with atomic_writer(dst) as f:
        for rec in _records(iter_rows(src), fmt, frep, report):
            if not report.error_count:
                f.write(json.dumps(record_to_json(rec), ensure_ascii=False))
                f.write("\n")
                written += 1
        raise_if_errors(report)
    return ConvertResult(dst, frep.rows_read, written, frep.format)
