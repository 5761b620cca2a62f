"""Is a file usable training data, and for which method: the data validator's answer, in the
words a file object (`status_details`) and a failed job (`error.message`) give it.

Why here, in one place: a file is judged twice. At upload no method is known yet, so the file
is read as the data layer reads it by itself and, when that fails, as each method reads it
(a file of reinforcement prompts is only told apart by the method: its rows end with a user
turn, which a chat file may not); `status` is `processed` when any reading holds. Creating a
job judges the file again for the job's method (tunesmith.data.methods: a chat file cannot feed
DPO, preference pairs cannot feed supervised training), so the methods and what they learn
from are the data layer's alone — nothing here lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_DETAILS = 20  # bad lines named in status_details (the count of the rest follows)


def describe_problems(report: Any) -> str | None:
    """`status_details`: every bad line (up to a bound) as 'line N: field: reason'."""
    if report.ok:
        return None
    parts = []
    for issue in report.errors[:MAX_DETAILS]:
        where = f"line {issue.line}: " if issue.line is not None else ""
        field = f"{issue.field}: " if issue.field else ""
        parts.append(f"{where}{field}{issue.message}")
    more = report.error_count - len(parts)
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts) or "the file is not usable training data"


def validate_file(
    path: Path, method: str | None = None
) -> tuple[str, str | None, dict[str, Any] | None]:
    """(status, status_details, report) from the data validator (structure; no model), for
    `method` (None: no method judged)."""
    from tunesmith import api
    from tunesmith.errors import TunesmithError

    try:
        report = api.validate_data(path, model=None, estimate=False, method=method)
    except TunesmithError as exc:  # not a data file at all: say what, without our paths
        return "error", exc.message, None
    return ("processed" if report.ok else "error"), describe_problems(report), report.to_dict()


def validate_upload(path: Path) -> tuple[str, str | None, dict[str, Any] | None]:
    """An upload's (status, status_details, report): the data layer's own reading, else the
    first method whose reading holds (its report's `stats.kind` and `methods` say which
    methods the file feeds); when none does, the problems of the first reading."""
    from tunesmith.data.methods import METHOD_DATA

    first = validate_file(path)
    status, _, report = first
    if status == "processed" or report is None:
        return first
    tried = {(report.get("stats") or {}).get("kind")}
    for method, (needs, _) in METHOD_DATA.items():
        if needs in tried:
            continue
        tried.add(needs)
        other = validate_file(path, method)
        if other[0] == "processed":
            return other
    return first


def file_problem(record: Any, param: str, method: str) -> dict[str, Any] | None:
    """Why a job of `method` cannot train on this file (the job's `error`), or None. The
    upload's reading answers when it fits the method; otherwise the file is validated again
    for the method, so the error names the lines (or says what the method learns from)."""
    from tunesmith.data.methods import mismatch

    report = record.report or {}
    if (
        record.status == "processed"
        and mismatch((report.get("stats") or {}).get("kind"), method) is None
    ):
        return None
    if not Path(record.path).is_file():  # (our path is never part of a message)
        return {
            "code": f"invalid_{param}",
            "message": f"{param} {record.id} ({record.filename}) no longer exists",
            "param": param,
        }
    status, details, again = validate_file(Path(record.path), method)
    if status == "processed":
        return None
    errors = (again or {}).get("errors") or []
    if errors and all(e.get("line") is None for e in errors):  # file-level: say which lines
        rows = (again or {}).get("rows_read") or 0
        details = f"{details} (lines 1-{rows})" if rows > 1 else details
    return {
        "code": f"invalid_{param}",
        "message": f"{param} {record.id} ({record.filename}) cannot train method {method!r}: "
        f"{details or 'not usable'}",
        "param": param,
    }
