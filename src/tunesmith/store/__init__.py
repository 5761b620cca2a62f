"""The job store: files, fine-tuning jobs, their events and checkpoints, and the job queue.

SQLAlchemy 2 over SQLite (the default: one file under TUNESMITH_HOME, nothing to start) or
PostgreSQL (by URL, for workers on several machines), migrated by Alembic when opened.
`repo` reads and writes rows (always scoped by project), `queue` hands jobs to workers under
leases. Everything returned is a frozen record (`records`), never a live ORM object.

The store sits above `api` and below the server and the worker, which are its only clients.
"""

from tunesmith.store.db import Store, default_url
from tunesmith.store.ids import new_id
from tunesmith.store.records import (
    ACTIVE,
    STATUSES,
    TERMINAL,
    CheckpointRecord,
    EventRecord,
    FileRecord,
    JobRecord,
)

__all__ = [
    "ACTIVE",
    "STATUSES",
    "TERMINAL",
    "CheckpointRecord",
    "EventRecord",
    "FileRecord",
    "JobRecord",
    "Store",
    "default_url",
    "new_id",
]
