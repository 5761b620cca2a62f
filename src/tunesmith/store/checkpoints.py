"""Checkpoints and the model names they and finished jobs answer to.

A model name is a job's `fine_tuned_model` (`ft:BASE:SUFFIX:JOBID`) or a checkpoint's
`fine_tuned_model_checkpoint` (`…:ckpt-step-N`); both resolve only inside their project.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update

from tunesmith.store.db import Store
from tunesmith.store.ids import new_id
from tunesmith.store.jobs import _job
from tunesmith.store.pages import clamp_limit, now, page
from tunesmith.store.records import (
    CheckpointRecord,
    JobRecord,
    checkpoint_record,
    job_record,
)
from tunesmith.store.schema import CheckpointRow, JobRow


def add_checkpoint(
    store: Store,
    job_id: str,
    *,
    step: int,
    metrics: dict[str, Any],
    fine_tuned_model_checkpoint: str,
    path: str,
) -> CheckpointRecord:
    """Record a checkpoint; again for the same (job, step) returns the first record unchanged
    (a worker that resumes and re-reports a step adds nothing)."""
    with store.session() as s:
        if _job(s, job_id) is None:
            raise LookupError(f"no job {job_id}")
        s.execute(
            _insert(store, CheckpointRow)
            .values(
                id=new_id("checkpoint"),
                job_id=job_id,
                step=int(step),
                created_at=now(),
                metrics=dict(metrics or {}),
                fine_tuned_model_checkpoint=fine_tuned_model_checkpoint,
                path=path,
            )
            .on_conflict_do_nothing(index_elements=["job_id", "step"])
        )
        row = s.scalars(
            select(CheckpointRow).where(
                CheckpointRow.job_id == job_id, CheckpointRow.step == int(step)
            )
        ).one()
        return checkpoint_record(row)


def _insert(store: Store, table: Any) -> Any:
    """The dialect's INSERT (both have ON CONFLICT DO NOTHING, the generic one has not)."""
    if store.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def list_checkpoints(
    store: Store, job_id: str, *, after: str | None = None, limit: int = 10
) -> tuple[list[CheckpointRecord], bool]:
    """A page of checkpoints, newest (highest step) first; `after` asks for earlier ones."""
    limit = clamp_limit(limit)
    with store.session(write=False) as s:
        q = select(CheckpointRow).where(CheckpointRow.job_id == job_id)
        if after is not None:
            cursor = s.scalar(
                select(CheckpointRow.step).where(
                    CheckpointRow.job_id == job_id, CheckpointRow.id == after
                )
            )
            if cursor is None:
                return [], False
            q = q.where(CheckpointRow.step < cursor)
        rows = list(s.scalars(q.order_by(CheckpointRow.step.desc()).limit(limit + 1)))
        items, more = page(rows, limit)
        return [checkpoint_record(r) for r in items], more


def find_model(
    store: Store, project: str, name: str
) -> tuple[JobRecord, CheckpointRecord | None] | None:
    """The job behind a model name: a job's `fine_tuned_model` (not deleted) -> (job, None);
    a checkpoint's `fine_tuned_model_checkpoint` -> (job, checkpoint). The job's status is
    not checked: the caller decides what is servable."""
    with store.session(write=False) as s:
        job = s.scalars(
            select(JobRow)
            .where(JobRow.project == project, JobRow.fine_tuned_model == name)
            .where(JobRow.model_deleted.is_(False))
            .order_by(JobRow.pk.desc())
        ).first()
        if job is not None:
            return job_record(job), None
        found = s.execute(
            select(JobRow, CheckpointRow)
            .join(CheckpointRow, CheckpointRow.job_id == JobRow.id)
            .where(JobRow.project == project, CheckpointRow.fine_tuned_model_checkpoint == name)
            .order_by(CheckpointRow.pk.desc())
        ).first()
        if found is None:
            return None
        return job_record(found[0]), checkpoint_record(found[1])


def list_models(store: Store, project: str) -> list[tuple[JobRecord, CheckpointRecord | None]]:
    """Every model name the project has, oldest first: each succeeded job's fine-tuned model
    that is not deleted, as (job, None), and every checkpoint, as (job, checkpoint)."""
    with store.session(write=False) as s:
        jobs = {
            r.id: job_record(r)
            for r in s.scalars(select(JobRow).where(JobRow.project == project).order_by(JobRow.pk))
        }
        out: list[tuple[JobRecord, CheckpointRecord | None]] = []
        for job in jobs.values():
            if job.status == "succeeded" and job.fine_tuned_model and not job.model_deleted:
                out.append((job, None))
        ckpts = s.scalars(
            select(CheckpointRow)
            .join(JobRow, CheckpointRow.job_id == JobRow.id)
            .where(JobRow.project == project)
            .order_by(JobRow.pk, CheckpointRow.step)
        )
        out.extend((jobs[c.job_id], checkpoint_record(c)) for c in ckpts)
        return out


def delete_model(store: Store, project: str, name: str) -> bool:
    """Delete a model name: a job's model is marked deleted (the job and its history stay;
    `find_model` no longer answers for it), a checkpoint's row is removed. False when the
    project has no such model. Files on disk are the caller's."""
    with store.session() as s:
        done = s.execute(
            update(JobRow)
            .where(JobRow.project == project, JobRow.fine_tuned_model == name)
            .where(JobRow.model_deleted.is_(False))
            .values(model_deleted=True)
            .returning(JobRow.pk)
        ).first()
        if done is not None:
            return True
        mine = select(JobRow.id).where(JobRow.project == project)
        gone = s.execute(
            delete(CheckpointRow)
            .where(CheckpointRow.fine_tuned_model_checkpoint == name)
            .where(CheckpointRow.job_id.in_(mine))
            .returning(CheckpointRow.pk)
        ).first()
        return gone is not None
