"""The first schema: files, jobs (with their lease), events, checkpoints.

Written out by hand rather than imported from `schema.py`: a revision is a frozen record of
what the database looked like then, and must not change when the models do.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ID = sa.String(64)
JSON_NULL = sa.JSON(none_as_null=True)


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("id", ID, nullable=False),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("status_details", sa.Text(), nullable=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("report", JSON_NULL, nullable=True),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name="pk_files"),
        sa.UniqueConstraint("id", name="uq_files_id"),
    )
    op.create_index("ix_files_project_pk", "files", ["project", "pk"])

    op.create_table(
        "jobs",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("id", ID, nullable=False),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("training_file", ID, nullable=False),
        sa.Column("validation_file", ID, nullable=True),
        sa.Column("suffix", sa.Text(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("method", sa.JSON(), nullable=False),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("error", JSON_NULL, nullable=True),
        sa.Column("fine_tuned_model", sa.Text(), nullable=True),
        sa.Column("trained_tokens", sa.BigInteger(), nullable=True),
        sa.Column("estimated_finish", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("result_files", sa.JSON(), nullable=False),
        sa.Column("run_dir", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.Double(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("model_deleted", sa.Boolean(), nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name="pk_jobs"),
        sa.UniqueConstraint("id", name="uq_jobs_id"),
    )
    op.create_index("ix_jobs_project_pk", "jobs", ["project", "pk"])
    op.create_index("ix_jobs_status_pk", "jobs", ["status", "pk"])
    op.create_index("ix_jobs_fine_tuned_model", "jobs", ["fine_tuned_model"])

    op.create_table(
        "events",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("id", ID, nullable=False),
        sa.Column("job_id", ID, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("data", JSON_NULL, nullable=True),
        sa.PrimaryKeyConstraint("pk", name="pk_events"),
        sa.UniqueConstraint("id", name="uq_events_id"),
        sa.UniqueConstraint("job_id", "seq", name="uq_events_job_id_seq"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_events_job_id_jobs"),
    )

    op.create_table(
        "checkpoints",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("id", ID, nullable=False),
        sa.Column("job_id", ID, nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("fine_tuned_model_checkpoint", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name="pk_checkpoints"),
        sa.UniqueConstraint("id", name="uq_checkpoints_id"),
        sa.UniqueConstraint("job_id", "step", name="uq_checkpoints_job_id_step"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_checkpoints_job_id_jobs"),
    )
    op.create_index(
        "ix_checkpoints_fine_tuned_model_checkpoint", "checkpoints", ["fine_tuned_model_checkpoint"]
    )


def downgrade() -> None:
    op.drop_table("checkpoints")
    op.drop_table("events")
    op.drop_table("jobs")
    op.drop_table("files")
