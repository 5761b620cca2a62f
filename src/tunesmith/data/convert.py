"""Convert a data file in any supported format to canonical OpenAI chat JSONL.

Why: a user who converts once gets a file every other tool (and OpenAI's API) reads, and sees
exactly what tunesmith will train on. Conversations become `{"messages": [...]}` (weights kept;
prompt/completion data gets `weight: 0` on all but the final answer, so the meaning survives);
preference pairs become OpenAI's DPO format. All rows are checked first: if any row is bad,
nothing is written and the error names every bad line (up to the first few, with a count).
Output is written through `tunesmith.io.atomic_open` (a temp file beside the target, renamed
when complete), so it is never half-written and an existing file is only replaced by a complete
one. The output folder must exist (a typo in it should not silently create folders), and the
output may never be the input.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tunesmith.data.formats import normalize_format, record_to_json
from tunesmith.data.readers import iter_rows
from tunesmith.data.validate import FileReport, ValidationReport, _records
from tunesmith.errors import DataError
from tunesmith.io import atomic_open

TARGETS = ("chat",)


@dataclass
class ConvertResult:
    path: Path
    rows_read: int
    rows_written: int
    format: str | None


def check_output(path: Path, inputs: tuple[Path, ...] = (), what: str = "the output file") -> Path:
    """Refuse an output that is an input, a folder, not .jsonl, or in a missing folder."""
    path = Path(path)
    for src in inputs:
        if path.resolve() == Path(src).resolve() or _same_file(path, Path(src)):
            raise DataError(
                f"{what} is the input file", where=str(path), hint="write to a new file"
            )
    if path.is_dir():
        raise DataError(f"{what} is a folder", where=str(path), hint="give a file name *.jsonl")
    if not path.name.lower().endswith(".jsonl"):
        raise DataError(
            f"{what} is written as JSONL", where=str(path), hint="name the output file *.jsonl"
        )
    parent = path.parent
    if not parent.is_dir():
        raise DataError(
            f"the folder of {what} does not exist",
            where=str(path),
            hint=f"create {parent} first",
        )
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


@contextmanager
def output_file(path: Path) -> Iterator[IO[str]]:
    """`tunesmith.io.atomic_open(path)`, with a folder we cannot write to reported as a
    DataError naming the file (not an OSError traceback)."""
    path = Path(path)
    with ExitStack() as stack:
        try:
            f = stack.enter_context(atomic_open(path, "w"))
        except OSError as exc:
            raise DataError(f"cannot write here: {exc.strerror or exc}", where=str(path)) from None
        yield f


def raise_if_errors(report: ValidationReport) -> None:
    """One error naming the first problem (file:line, field) and a count of the others."""
    if not report.error_count:
        return
    first = report.errors[0]
    shown = "; ".join(
        (f"line {e.line}: " if e.line is not None else "") + e.message for e in report.errors[1:4]
    )
    more = f" (also {shown}" + (" ..." if report.error_count > 4 else "") + ")" if shown else ""
    field = f"{first.field}: " if first.field else ""
    if first.code != "unreadable" and first.line is not None:
        count = f"{report.error_count} bad row(s); "
    else:
        count = f"{report.error_count} errors; " if report.error_count > 1 else ""
    hint = first.hint if report.error_count == 1 and first.hint else None
    raise DataError(
        f"{count}{field}{first.message}{more}",
        where=first.where,
        hint=hint or "run `tunesmith data validate` for the full report",
    )


def raise_if_empty(report: ValidationReport, path: Path) -> None:
    if not report.error_count and not report.rows_read:
        raise DataError("the file holds no examples", where=str(path), hint="nothing was written")


def convert_file(src: Path, dst: Path, *, to: str = "chat", format: str | None = None):
    """Convert `src` to canonical chat JSONL at `dst` (see the module docstring)."""
    if to not in TARGETS:
        raise DataError(f"cannot convert to '{to}'", hint=f"use one of: {', '.join(TARGETS)}")
    src, dst = Path(src), Path(dst)
    check_output(dst, (src,))
    fmt = normalize_format(format)
    report = ValidationReport(settings={})
    frep = FileReport("input", str(src), format=fmt)
    report.files.append(frep)
    written = 0
    # Stream: good rows go to the temp file as they come; any bad row discards it at the end.
    with output_file(dst) as f:
        for rec in _records(iter_rows(src), fmt, frep, report):
            if not report.error_count:
                f.write(json.dumps(record_to_json(rec), ensure_ascii=False, default=str))
                f.write("\n")
                written += 1
        raise_if_errors(report)
        raise_if_empty(report, src)
    return ConvertResult(dst, frep.rows_read, written, frep.format)
