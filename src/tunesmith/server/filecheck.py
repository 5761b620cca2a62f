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

import threading
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


# -- the validation report a client reads (GET /v1/files/{id}/validation) ----------------------

PREVIEW_EXAMPLES = 3
PREVIEW_CHARS = 4000  # characters of one previewed example sent (the rest is cut, and said so)
_REPORT_LOCKS: dict[str, threading.Lock] = {}
_REPORT_GUARD = threading.Lock()


def run_data_settings(settings: Any, target: str) -> dict[str, Any]:
    """How the operator's runs read data (`job_defaults` over the run spec's defaults), so the
    report's token counts and over-long rows are the ones training will see."""
    from tunesmith import api

    spec = api.load_run_spec({**settings.job_defaults, "model": target})
    data = spec.data
    return {
        "max_seq_len": data.max_seq_len,
        "train_on": data.train_on,
        "format": data.format,
        "truncate": data.truncate,
        "dedupe": data.dedupe,
        "adapter": spec.adapter,
    }


def scrubber(pairs: list[tuple[str, str]]) -> Any:
    """A function that replaces server paths in every string of a JSON value (longest first),
    so no report, message or preview names our storage."""
    pairs = sorted(((a, b) for a, b in pairs if a), key=lambda p: len(p[0]), reverse=True)

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            for needle, replacement in pairs:
                value = value.replace(needle, replacement)
            return value
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        return value

    return scrub


def public_report(
    record: Any, report: dict[str, Any] | None, settings: Any, model: str | None
) -> dict[str, Any]:
    """The validator's report as the file's owner may read it: every issue with the file's
    own name instead of our stored path (`file`, `line`, `field`, `code`, `message`, `hint`),
    the statistics, which methods the file feeds. A file that was not data at all (no report)
    gets one file-level error with the upload's reason."""
    if report is None:
        issue = {
            "severity": "error",
            "code": "unreadable",
            "message": record.status_details or "the file is not usable training data",
            "line": None,
            "field": None,
            "hint": None,
        }
        report = {"ok": False, "errors": [issue], "error_count": 1, "warning_count": 0}
    out = dict(report)
    for key in ("errors", "warnings"):
        out[key] = [
            {**{k: v for k, v in issue.items() if k != "path"}, "file": record.filename}
            for issue in report.get(key) or []
        ]
    out["files"] = [
        {**{k: v for k, v in f.items() if k != "path"}, "file": record.filename}
        for f in report.get("files") or []
    ]
    if model is not None:
        out["settings"] = {**(report.get("settings") or {}), "model": model}
    for key in ("rows_read", "rows_ok", "rows_rejected", "rows_dropped", "error_count"):
        out.setdefault(key, 0)
    out.setdefault("warning_count", len(out["warnings"]))
    out.setdefault("stats", {})
    out.setdefault("methods", {})
    pairs = [
        (str(record.path), record.filename),
        (str(settings.files_dir), "$TUNESMITH_HOME/files"),
        (str(settings.home), "$TUNESMITH_HOME"),
    ]
    if model is not None:
        pairs.append((str(settings.models.get(model, "")), model))
    return dict(scrubber(pairs)(out))


def _lock_for(key: str) -> threading.Lock:
    with _REPORT_GUARD:
        return _REPORT_LOCKS.setdefault(key, threading.Lock())


def report_cache(settings: Any, file_id: str) -> Path:
    """Where a file's tokenized reports are kept (one per model and data settings): a file never
    changes after upload, so a report computed once stays true until the file is deleted."""
    return settings.home / "reports" / file_id


def token_report(settings: Any, record: Any, model: str) -> dict[str, Any]:
    """The file's report with token statistics and a trained-token preview for `model` (an
    offered base model's public name): validated again with its tokenizer and the operator's
    data settings, computed once per (file, model, settings) and kept on disk."""
    import hashlib
    import json

    from tunesmith import api
    from tunesmith.errors import TunesmithError
    from tunesmith.io import atomic_write_json, read_json

    target = str(settings.models[model])
    options = run_data_settings(settings, target)
    key = hashlib.sha256(json.dumps([target, options], sort_keys=True).encode()).hexdigest()[:16]
    cache = report_cache(settings, record.id) / f"{key}.json"
    with _lock_for(f"{record.id}/{key}"):
        try:
            cached = read_json(cache)
            if isinstance(cached, dict):
                return cached
        except (OSError, ValueError):
            pass
        stored_method = ((record.report or {}).get("settings") or {}).get("method")
        adapter = options.pop("adapter")
        try:
            report = api.validate_data(
                Path(record.path),
                model=target,
                estimate=False,
                method=stored_method,
                adapter=adapter,
                **options,
            ).to_dict()
        except TunesmithError as exc:  # the file is not data at all: the upload said why
            report = dict(record.report or {}) or {"ok": False, "errors": []}
            report["token_error"] = exc.message
        preview, note = _preview(record, target, report, options)
        out = {**report, "preview": preview, "preview_note": note}
        atomic_write_json(cache, out)
        return out


def _preview(
    record: Any, target: str, report: dict[str, Any], options: dict[str, Any]
) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The first examples rendered through the chat template, as (text, trained) runs. The
    preview reads the file in order and stops at its first bad row, so a file with a bad row
    near the top previews the rows before it."""
    from tunesmith import api
    from tunesmith.errors import TunesmithError

    kind = (report.get("stats") or {}).get("kind")
    if kind == "prompt":
        return None, "prompts have no answers to train on: reinforcement samples them"
    bad = [e.get("line") for e in report.get("errors") or [] if e.get("line") is not None]
    wanted = PREVIEW_EXAMPLES
    if bad:
        wanted = min(wanted, min(bad) - 1)
    if wanted < 1 or not report.get("rows_ok"):
        return None, "no row before the first bad one to preview"
    try:
        examples = api.preview_data(
            Path(record.path),
            model=target,
            n=wanted,
            format=options.get("format"),
            train_on=options.get("train_on", "assistant"),
        )
    except TunesmithError as exc:
        return None, f"no preview: {exc.message}"
    out = []
    for ex in examples:
        spans, used, cut = [], 0, False
        for text, trained in ex.spans:
            if used + len(text) > PREVIEW_CHARS:
                text, cut = text[: max(0, PREVIEW_CHARS - used)], True
            used += len(text)
            if text:
                spans.append({"text": text, "trained": bool(trained)})
            if cut:
                break
        out.append(
            {
                "line": ex.source.line if ex.source is not None else None,
                "kind": ex.kind,
                "n_tokens": ex.n_tokens,
                "n_trained": ex.n_trained,
                "spans": spans,
                "truncated": cut,
            }
        )
    return out, None
