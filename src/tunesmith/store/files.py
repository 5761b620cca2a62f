"""Uploaded files: their rows (the bytes live on disk, under generated ids, the server's
business). Scoped by project; deleting marks the row, so a cursor naming it keeps working."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from tunesmith.store.db import Store
from tunesmith.store.ids import new_id
from tunesmith.store.pages import clamp_limit, now, page
from tunesmith.store.records import (
    FILE_STATUSES,
    FileRecord,
    file_record,
)
from tunesmith.store.schema import FileRow


def create_file(
    store: Store,
    project: str,
    *,
    filename: str,
    purpose: str,
    bytes: int,
    path: str,
    sha256: str,
    status: str,
    status_details: str | None = None,
    report: dict[str, Any] | None = None,
    file_id: str | None = None,
) -> FileRecord:
    """`file_id`: the id the caller already stored the bytes under (default: a new one)."""
    if status not in FILE_STATUSES:
        raise ValueError(f"unknown file status {status!r}")
    row = FileRow(
        id=file_id or new_id("file"),
        project=project,
        filename=filename,
        purpose=purpose,
        bytes=bytes,
        created_at=now(),
        status=status,
        status_details=status_details,
        path=path,
        sha256=sha256,
        report=report,
    )
    with store.session() as s:
        s.add(row)
        s.flush()
        return file_record(row)


def _live_file(project: str) -> Select[FileRow]:
    return select(FileRow).where(FileRow.project == project, FileRow.deleted_at.is_(None))


def get_file(store: Store, project: str, file_id: str) -> FileRecord | None:
    with store.session(write=False) as s:
        row = s.scalars(_live_file(project).where(FileRow.id == file_id)).first()
        return file_record(row) if row else None


def list_files(
    store: Store,
    project: str,
    *,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = 20,
    order: str = "desc",
) -> tuple[list[FileRecord], bool]:
    """A page of the project's files, newest first (`order="desc"`) or oldest first."""
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    limit = clamp_limit(limit)
    desc = order == "desc"
    with store.session(write=False) as s:
        q = _live_file(project)
        if purpose is not None:
            q = q.where(FileRow.purpose == purpose)
        if after is not None:
            # Deleted files still anchor a cursor: a page walk survives a delete mid-walk.
            cursor = s.scalar(
                select(FileRow.pk).where(FileRow.project == project, FileRow.id == after)
            )
            if cursor is None:
                return [], False
            q = q.where(FileRow.pk < cursor if desc else FileRow.pk > cursor)
        q = q.order_by(FileRow.pk.desc() if desc else FileRow.pk.asc()).limit(limit + 1)
        rows, more = page(list(s.scalars(q)), limit)
        return [file_record(r) for r in rows], more


def delete_file(store: Store, project: str, file_id: str) -> FileRecord | None:
    """Mark the file deleted and return it (None when the project has no such file). The
    caller removes its bytes from disk."""
    with store.session() as s:
        row = s.scalars(_live_file(project).where(FileRow.id == file_id)).first()
        if row is None:
            return None
        row.deleted_at = now()
        return file_record(row)
