"""Job events: appended with a per-job sequence number, read in pages (newest first) or
followed (oldest first, after a given number: the SSE stream)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from tunesmith.store.db import Store
from tunesmith.store.ids import new_id
from tunesmith.store.pages import clamp_limit, now, page
from tunesmith.store.records import (
    EVENT_TYPES,
    EventRecord,
    event_record,
)
from tunesmith.store.schema import EventRow, JobRow


def add_events(store: Store, job_id: str, events: list[dict[str, Any]]) -> list[EventRecord]:
    """Append events to a job, numbered 1, 2, ... per job (`seq`).

    The numbers come from the job row's counter, bumped by an UPDATE that holds the row's
    lock until commit: two writers of one job's events commit in `seq` order, so a follower
    reading `seq > last_seen` never steps over an event that was still in flight."""
    if not events:
        return []
    stamp = now()
    rows = []
    for e in events:
        kind = e.get("type", "message")
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event type {kind!r}")
        rows.append(
            EventRow(
                id=new_id("event"),
                job_id=job_id,
                created_at=int(e.get("created_at") or stamp),
                level=str(e.get("level", "info")),
                message=str(e.get("message", "")),
                type=kind,
                data=e.get("data"),
            )
        )
    with store.session() as s:
        last = s.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(event_seq=JobRow.event_seq + len(rows))
            .returning(JobRow.event_seq)
        ).scalar_one_or_none()
        if last is None:
            raise LookupError(f"no job {job_id}")
        for i, row in enumerate(rows):
            row.seq = last - len(rows) + 1 + i
        s.add_all(rows)
        s.flush()
        return [event_record(r) for r in rows]


def list_events(
    store: Store, job_id: str, *, after: str | None = None, limit: int = 20
) -> tuple[list[EventRecord], bool]:
    """A page of events, newest first; `after` (an event id) asks for the ones older than it,
    which is how OpenAI's SDK walks them."""
    limit = clamp_limit(limit)
    with store.session(write=False) as s:
        q = select(EventRow).where(EventRow.job_id == job_id)
        if after is not None:
            cursor = s.scalar(
                select(EventRow.seq).where(EventRow.job_id == job_id, EventRow.id == after)
            )
            if cursor is None:
                return [], False
            q = q.where(EventRow.seq < cursor)
        rows, more = page(list(s.scalars(q.order_by(EventRow.seq.desc()).limit(limit + 1))), limit)
        return [event_record(r) for r in rows], more


def events_since(
    store: Store, job_id: str, seq: int, *, limit: int | None = None
) -> list[EventRecord]:
    """Events with `seq` above the given one, oldest first (for following a job: SSE)."""
    with store.session(write=False) as s:
        q = (
            select(EventRow)
            .where(EventRow.job_id == job_id, EventRow.seq > seq)
            .order_by(EventRow.seq)
        )
        if limit is not None:
            q = q.limit(clamp_limit(limit))
        return [event_record(r) for r in s.scalars(q)]
