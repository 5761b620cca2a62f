"""The store's tables, as SQLAlchemy ORM classes (the migrations create exactly these).

Why a surrogate `pk` beside the public `id`: ids are random, so "newest first", "oldest queued
job first" and cursor pages (`after=<id>`) need a column that grows with insertion order; the
public id is unique and indexed, the integer `pk` orders. Events carry a per-job `seq` taken
under the job row's lock (see `repo.add_events`), so a reader that follows `seq` upwards (the
SSE stream) never skips an event that commits late.

JSON columns hold the free-form parts (metadata, method, hyperparameters, reports, metrics);
nothing queries inside them, so one schema serves SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an `INTEGER PRIMARY KEY` (the rowid); PostgreSQL gets a bigint.
PK = BigInteger().with_variant(Integer(), "sqlite")
ID = String(64)
NULLABLE_JSON = JSON(none_as_null=True)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class FileRow(Base):
    """An uploaded file. Deleting sets `deleted_at` (the row stays so that a page cursor
    naming it still works); every read skips deleted rows."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_project_pk", "project", "pk"),)

    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(ID, unique=True)
    project: Mapped[str] = mapped_column(Text)
    filename: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    status_details: Mapped[str | None] = mapped_column(Text, nullable=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    report: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSON, nullable=True)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class JobRow(Base):
    """A fine-tuning job, its queue state (lease) included: one row, one lock, so a status
    change and a lease change can never disagree."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_project_pk", "project", "pk"),
        Index("ix_jobs_status_pk", "status", "pk"),
    )

    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(ID, unique=True)
    project: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    training_file: Mapped[str] = mapped_column(ID)
    validation_file: Mapped[str | None] = mapped_column(ID, nullable=True)
    suffix: Mapped[str | None] = mapped_column(Text, nullable=True)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    method: Mapped[dict[str, Any]] = mapped_column(JSON)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(32))
    error: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSON, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(Text, nullable=True, index=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    result_files: Mapped[list[str]] = mapped_column(JSON)
    run_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    model_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    event_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(ID, unique=True)
    job_id: Mapped[str] = mapped_column(ID, ForeignKey("jobs.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSON, nullable=True)


class CheckpointRow(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step"),)

    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(ID, unique=True)
    job_id: Mapped[str] = mapped_column(ID, ForeignKey("jobs.id"))
    step: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(Text, index=True)
    path: Mapped[str] = mapped_column(Text)
