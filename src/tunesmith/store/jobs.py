"""Jobs: creation, reads scoped by project, plain field updates, and status changes.

Status changes go through `transition`, a single compare-and-set UPDATE: it happens only when
the current status is one the caller expects, and never out of a terminal status, however
many servers and workers race on the row. The user actions (cancel, pause, resume) are built
on it; the queue (`queue.py`) too.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tunesmith.store.db import Store
from tunesmith.store.ids import new_id
from tunesmith.store.pages import clamp_limit, now, page
from tunesmith.store.records import (
    ACTIVE,
    JOB_WRITABLE,
    STATUSES,
    TERMINAL,
    JobRecord,
    job_record,
)
from tunesmith.store.schema import JobRow

# How many rows a metadata-filtered job list reads per round (the filter runs in Python, so a
# key of any shape is safe; see list_jobs).
_SCAN = 200


def _job_values(fields: dict[str, Any]) -> dict[str, Any]:
    """Record field names -> column attribute names, refusing unknown and read-only ones."""
    bad = sorted(set(fields) - JOB_WRITABLE)
    if bad:
        hint = " (status changes go through transition())" if "status" in bad else ""
        raise TypeError(f"not a writable job field: {', '.join(bad)}{hint}")
    return {("metadata_" if k == "metadata" else k): v for k, v in fields.items()}


def create_job(store: Store, project: str, **fields: Any) -> JobRecord:
    """A new job in `validating_files` (`model` and `training_file` required)."""
    for required in ("model", "training_file"):
        if not fields.get(required):
            raise TypeError(f"create_job needs {required}")
    values: dict[str, Any] = {
        "seed": None,
        "metadata_": {},
        "method": {},
        "hyperparameters": {},
        "result_files": [],
        "attempts": 0,
        "cancel_requested": False,
        "model_deleted": False,
        "created_at": now(),
    }
    values.update(_job_values(fields))
    if values["seed"] is None:  # OpenAI's jobs always carry the seed they ran with
        values["seed"] = secrets.randbelow(2**31)
    for key in ("metadata_", "method", "hyperparameters", "result_files"):
        if values[key] is None:
            values[key] = [] if key == "result_files" else {}
    row = JobRow(
        id=new_id("job"), project=project, status="validating_files", event_seq=0, **values
    )
    with store.session() as s:
        s.add(row)
        s.flush()
        return job_record(row)


def _job(s: Session, job_id: str, project: str | None = None) -> JobRow | None:
    q = select(JobRow).where(JobRow.id == job_id)
    if project is not None:
        q = q.where(JobRow.project == project)
    return s.scalars(q.execution_options(populate_existing=True)).first()


def get_job(store: Store, project: str, job_id: str) -> JobRecord | None:
    with store.session(write=False) as s:
        row = _job(s, job_id, project)
        return job_record(row) if row else None


def get_job_any(store: Store, job_id: str) -> JobRecord | None:
    """A job by id whoever owns it (for the worker, which has no project)."""
    with store.session(write=False) as s:
        row = _job(s, job_id)
        return job_record(row) if row else None


def _matches(have: dict[str, Any] | None, want: dict[str, str]) -> bool:
    have = have or {}
    return all(k in have and str(have[k]) == str(v) for k, v in want.items())


def list_jobs(
    store: Store,
    project: str,
    *,
    after: str | None = None,
    limit: int = 20,
    metadata: dict[str, str] | None = None,
) -> tuple[list[JobRecord], bool]:
    """A page of the project's jobs, newest first; `metadata` keeps jobs carrying every pair.

    The metadata filter runs here in Python over rows read newest first in rounds: keys and
    values are user strings, and JSON paths built from them are dialect-specific and fragile
    (a quote in a key breaks SQLite's), while a project's job list is small."""
    limit = clamp_limit(limit)
    with store.session(write=False) as s:
        base = select(JobRow).where(JobRow.project == project).order_by(JobRow.pk.desc())
        cursor: int | None = None
        if after is not None:
            cursor = s.scalar(
                select(JobRow.pk).where(JobRow.project == project, JobRow.id == after)
            )
            if cursor is None:
                return [], False
        if not metadata:
            q = base.where(JobRow.pk < cursor) if cursor is not None else base
            rows = list(s.scalars(q.limit(limit + 1)))
        else:
            rows = []
            while len(rows) <= limit:
                q = base.where(JobRow.pk < cursor) if cursor is not None else base
                chunk = list(s.scalars(q.limit(_SCAN)))
                if not chunk:
                    break
                rows.extend(r for r in chunk if _matches(r.metadata_, metadata))
                cursor = chunk[-1].pk
        items, more = page(rows, limit)
        return [job_record(r) for r in items], more


def succeeded_since(store: Store, since: int, limit: int = 100) -> list[JobRecord]:
    """Jobs of every project that succeeded at or after `since` (epoch seconds), oldest first,
    at most `limit` (for the server itself: the GGUF cache exports them for serving)."""
    with store.session(write=False) as s:
        q = (
            select(JobRow)
            .where(JobRow.status == "succeeded", JobRow.finished_at >= since)
            .order_by(JobRow.finished_at, JobRow.pk)
            .limit(limit)
        )
        return [job_record(r) for r in s.scalars(q)]


def update_job(store: Store, job_id: str, **fields: Any) -> JobRecord:
    """Write plain fields (trained_tokens, result_files, run_dir, ...); never the status."""
    values = _job_values(fields)
    with store.session() as s:
        if values:
            s.execute(update(JobRow).where(JobRow.id == job_id).values(**values))
        row = _job(s, job_id)
        if row is None:
            raise LookupError(f"no job {job_id}")
        return job_record(row)


def _set_status(
    s: Session, job_id: str, to: str, allowed: Iterable[str], values: dict[str, Any], **where: Any
) -> JobRow | None:
    """The compare-and-set: one UPDATE whose WHERE holds the expected statuses (never a
    terminal one), so it is atomic on every backend. None when it did not apply."""
    if to not in STATUSES:
        raise ValueError(f"unknown job status {to!r}")
    allowed = set(allowed) - TERMINAL
    if not allowed:
        return None
    values = {**values, "status": to}
    if to in TERMINAL:
        values.setdefault("finished_at", now())
    q = update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(sorted(allowed)))
    for column, value in where.items():
        q = q.where(getattr(JobRow, column) == value)
    done = s.execute(q.values(**values).returning(JobRow.pk)).first()
    return _job(s, job_id) if done is not None else None


def transition(
    store: Store, job_id: str, to: str, *, expect: set[str] | None = None, **fields: Any
) -> JobRecord | None:
    """Move the job to `to` iff its status is in `expect` (default: any non-terminal one),
    writing `fields` in the same UPDATE. Terminal statuses never change. Entering one sets
    `finished_at`. Returns the new row, or None when refused (or no such job)."""
    values = _job_values(fields)
    with store.session() as s:
        row = _set_status(s, job_id, to, ACTIVE if expect is None else expect, values)
        return job_record(row) if row else None


def _user_action(
    store: Store, project: str, job_id: str, moves: list[tuple[set[str], str, dict[str, Any]]]
) -> JobRecord | None:
    """Apply the first move whose source statuses hold; the job unchanged when none does."""
    with store.session() as s:
        if _job(s, job_id, project) is None:
            return None
        for sources, to, values in moves:
            row = _set_status(s, job_id, to, sources, values)
            if row is not None:
                return job_record(row)
        row = _job(s, job_id)
        return job_record(row) if row else None


def cancel_job(store: Store, project: str, job_id: str) -> JobRecord | None:
    """Any non-terminal job -> cancelled now; `cancel_requested` tells a worker running it to
    stop (its lease is left alone, so its next heartbeat sees the cancelled row)."""
    return _user_action(
        store, project, job_id, [(set(ACTIVE), "cancelled", {"cancel_requested": True})]
    )


def pause_job(store: Store, project: str, job_id: str) -> JobRecord | None:
    """Not started yet -> paused; running -> pausing (its worker checkpoints, then releases
    it as paused); anything else unchanged."""
    return _user_action(
        store,
        project,
        job_id,
        [({"queued", "validating_files"}, "paused", {}), ({"running"}, "pausing", {})],
    )


def resume_job(store: Store, project: str, job_id: str) -> JobRecord | None:
    """paused -> queued (a worker claims it and resumes from its last checkpoint)."""
    return _user_action(store, project, job_id, [({"paused"}, "queued", {})])
