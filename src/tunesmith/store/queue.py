"""The job queue: workers claim jobs under a lease and keep it alive with heartbeats.

A claim takes one job in one transaction — the oldest `queued` job, or a `running`/`pausing`
job whose lease ran out (its worker died: the job is taken over and resumed from its last
checkpoint). On PostgreSQL the candidate row is locked with `FOR UPDATE SKIP LOCKED`, so
workers on many machines claim different jobs without waiting on each other; on SQLite the
claim runs under `BEGIN IMMEDIATE`, the database's one write lock, so claims are serialised.
Either way no job is handed to two workers at once.

A lease is an owner and an expiry time, on the job row itself. Only the owner may extend it
(`heartbeat`), finish the job or give it back; once another worker has taken the job over,
the old owner's heartbeat returns None and it must stop. Lease times come from `Store.now`
(the database's clock on PostgreSQL), so workers' clocks need not agree.
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select, update

from tunesmith.store.db import Store
from tunesmith.store.jobs import _job, _job_values, _set_status
from tunesmith.store.pages import now
from tunesmith.store.records import ACTIVE, TERMINAL, JobRecord, job_record
from tunesmith.store.schema import JobRow

# Statuses a worker holds a job in: their lease is what a dead worker leaves behind.
HELD = ("running", "pausing")


def claim(store: Store, worker_id: str, *, lease_s: float) -> JobRecord | None:
    """Take one job for `worker_id` for `lease_s` seconds, or None when there is none.

    The job becomes `running` (a `pausing` job taken over stays `pausing`: the new worker
    resumes it only to checkpoint and release it as paused). Every claim counts in
    `attempts` (1 on the first run; a takeover or a resume after a pause adds one);
    `started_at` is set on the first."""
    with store.session() as s:
        clock = store.now(s)
        expired = or_(JobRow.lease_expires_at.is_(None), JobRow.lease_expires_at < clock)
        q = (
            select(JobRow)
            .where(or_(JobRow.status == "queued", and_(JobRow.status.in_(HELD), expired)))
            .order_by(JobRow.pk)
            .limit(1)
        )
        if store.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        row = s.scalars(q).first()
        if row is None:
            return None
        if row.status != "pausing":
            row.status = "running"
        row.lease_owner = worker_id
        row.lease_expires_at = clock + lease_s
        row.attempts = (row.attempts or 0) + 1
        if row.started_at is None:
            row.started_at = now()
        s.flush()
        return job_record(row)


def heartbeat(store: Store, job_id: str, worker_id: str, *, lease_s: float) -> JobRecord | None:
    """Extend the lease iff `worker_id` still holds it; returns the row as it is now, so the
    worker sees a cancel (`status == "cancelled"`, `cancel_requested`) or a pause request
    (`status == "pausing"`). None means the lease is lost: stop at once, write nothing."""
    with store.session() as s:
        clock = store.now(s)
        done = s.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.lease_owner == worker_id)
            .values(lease_expires_at=clock + lease_s)
            .returning(JobRow.pk)
        ).first()
        if done is None:
            return None
        row = _job(s, job_id)
        return job_record(row) if row else None


def finish(
    store: Store, job_id: str, worker_id: str, to: str, **fields: object
) -> JobRecord | None:
    """End the worker's hold: move the job to `to` (with `fields`) and clear the lease, only
    while `worker_id` owns it and the job is not terminal. None when refused — e.g. the job
    was cancelled meanwhile (then it stays cancelled) or taken over by another worker."""
    values = {**_job_values(dict(fields)), "lease_owner": None, "lease_expires_at": None}
    with store.session() as s:
        row = _set_status(s, job_id, to, ACTIVE, values, lease_owner=worker_id)
        return job_record(row) if row else None


def release(store: Store, job_id: str, worker_id: str, to: str = "queued") -> JobRecord | None:
    """Give the job back without ending it: `queued` (another worker may take it) or `paused`
    (after a pause request, once the checkpoint is written). Only while owned."""
    if to in TERMINAL:
        raise ValueError(f"release() gives a job back; use finish() to end it as {to!r}")
    return finish(store, job_id, worker_id, to)
