"""What the store hands out: plain frozen dataclasses, never live ORM objects.

A record is a snapshot taken inside the transaction that read it. Callers (the server, the
worker) can keep it, pass it across threads and serialise it without a session, and nothing
they do to it writes to the database behind their back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunesmith.store.schema import CheckpointRow, EventRow, FileRow, JobRow

STATUSES = frozenset(
    {
        "validating_files",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "pausing",
        "paused",
    }
)
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE = STATUSES - TERMINAL
FILE_STATUSES = frozenset({"uploaded", "processed", "error"})
EVENT_TYPES = frozenset({"message", "metrics"})


@dataclass(frozen=True)
class FileRecord:
    id: str
    project: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    status: str
    status_details: str | None
    path: str
    sha256: str
    report: dict[str, Any] | None


@dataclass(frozen=True)
class JobRecord:
    id: str
    project: str
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    metadata: dict[str, Any]
    method: dict[str, Any]
    hyperparameters: dict[str, Any]
    status: str
    error: dict[str, Any] | None
    fine_tuned_model: str | None
    trained_tokens: int | None
    estimated_finish: int | None
    created_at: int
    started_at: int | None
    finished_at: int | None
    result_files: list[str]
    run_dir: str | None
    lease_owner: str | None
    lease_expires_at: float | None
    attempts: int
    cancel_requested: bool
    # Set by repo.delete_model: the job stays (with its name, for history); the model is gone.
    model_deleted: bool = False
    # How many events the job has (the seq of its newest one).
    event_seq: int = 0


@dataclass(frozen=True)
class EventRecord:
    id: str
    job_id: str
    seq: int
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None


@dataclass(frozen=True)
class CheckpointRecord:
    id: str
    job_id: str
    step: int
    created_at: int
    metrics: dict[str, Any]
    fine_tuned_model_checkpoint: str
    path: str


# Job fields a caller may write (create_job, update_job, transition, finish): everything but the
# identity, the status (only transition/the queue move it) and the event counter.
JOB_WRITABLE = frozenset(JobRecord.__dataclass_fields__) - {"id", "project", "status", "event_seq"}


def file_record(row: FileRow) -> FileRecord:
    return FileRecord(
        id=row.id,
        project=row.project,
        filename=row.filename,
        purpose=row.purpose,
        bytes=row.bytes,
        created_at=row.created_at,
        status=row.status,
        status_details=row.status_details,
        path=row.path,
        sha256=row.sha256,
        report=row.report,
    )


def job_record(row: JobRow) -> JobRecord:
    return JobRecord(
        id=row.id,
        project=row.project,
        model=row.model,
        training_file=row.training_file,
        validation_file=row.validation_file,
        suffix=row.suffix,
        seed=row.seed if row.seed is not None else 0,
        metadata=dict(row.metadata_ or {}),
        method=dict(row.method or {}),
        hyperparameters=dict(row.hyperparameters or {}),
        status=row.status,
        error=row.error,
        fine_tuned_model=row.fine_tuned_model,
        trained_tokens=row.trained_tokens,
        estimated_finish=row.estimated_finish,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        result_files=list(row.result_files or []),
        run_dir=row.run_dir,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        attempts=row.attempts or 0,
        cancel_requested=bool(row.cancel_requested),
        model_deleted=bool(row.model_deleted),
        event_seq=row.event_seq or 0,
    )


def event_record(row: EventRow) -> EventRecord:
    return EventRecord(
        id=row.id,
        job_id=row.job_id,
        seq=row.seq,
        created_at=row.created_at,
        level=row.level,
        message=row.message,
        type=row.type,
        data=row.data,
    )


def checkpoint_record(row: CheckpointRow) -> CheckpointRecord:
    return CheckpointRecord(
        id=row.id,
        job_id=row.job_id,
        step=row.step,
        created_at=row.created_at,
        metrics=dict(row.metrics or {}),
        fine_tuned_model_checkpoint=row.fine_tuned_model_checkpoint,
        path=row.path,
    )
