"""/v1/files: upload (multipart), list, retrieve, delete, content, and our extension
`/validation` (the validator's whole report: every bad line, token statistics, a preview).

An upload is stored under a generated id (the user's file name is kept for display only and
never touches a path), streamed to disk in chunks against the size limit (413 beyond it), and
validated at once by the data validator (server/filecheck.py): the file's `status` is
`processed` or `error`, and `status_details` names the bad lines ("line 7: messages[1].role:
unknown role 'robot'"). `GET /v1/files/{id}/validation` is the full report behind that line;
with `?model=NAME` (an offered base model) it adds token statistics and the trained-token
preview of the first examples under that model's chat template (computed once, then kept).
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from tunesmith.server.auth import project_of
from tunesmith.server.errors import ApiError, model_not_offered, not_found
from tunesmith.server.filecheck import public_report, report_cache, token_report, validate_upload
from tunesmith.server.schemas import file_object, page
from tunesmith.store import repo
from tunesmith.store.ids import new_id

router = APIRouter()
PURPOSES = ("fine-tune",)
CHUNK = 1 << 20


def display_name(raw: str | None) -> str:
    """The user's file name for display: last path part, no control characters, bounded."""
    name = (raw or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return (name or "upload")[:255]


def stored_suffix(filename: str) -> str:
    """The extension the stored copy keeps, so the reader knows the format: the user's, when
    it is one the data layer reads (`.jsonl`, `.json`, `.csv`, `.parquet`, optionally `.gz`),
    else `.jsonl`. Nothing else of the user's name reaches the path."""
    from tunesmith.data.readers import SUFFIXES

    name = filename.lower()
    gz = ".gz" if name.endswith(".gz") else ""
    name = name[: -len(gz)] if gz else name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix + gz
    return ".jsonl"


@router.post("/files")
async def upload(
    request: Request,
    file: UploadFile = File(...),
    purpose: str = Form(...),
    project: str = Depends(project_of),
) -> dict[str, Any]:
    settings = request.app.state.settings
    if purpose not in PURPOSES:
        raise ApiError(
            400,
            f"purpose must be one of {', '.join(PURPOSES)} (got {purpose!r})",
            code="invalid_purpose",
            param="purpose",
        )
    file_id = new_id("file")
    filename = display_name(file.filename)
    settings.files_dir.mkdir(parents=True, exist_ok=True)
    dest = settings.files_dir / f"{file_id}{stored_suffix(filename)}"
    tmp = dest.with_name(f".{file_id}.part")
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            while chunk := await file.read(CHUNK):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise ApiError(
                        413,
                        f"file is larger than the limit of {settings.max_upload_bytes} bytes",
                        code="file_too_large",
                        param="file",
                    )
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    from starlette.concurrency import run_in_threadpool

    status, details, report = await run_in_threadpool(validate_upload, dest)
    record = repo.create_file(
        request.app.state.store,
        project,
        filename=filename,
        purpose=purpose,
        bytes=size,
        path=str(dest),
        sha256=digest.hexdigest(),
        status=status,
        status_details=details,
        report=report,
        file_id=file_id,
    )
    return file_object(record)


@router.get("/files")
def list_files(
    request: Request,
    purpose: str | None = Query(None, max_length=64),
    after: str | None = Query(None, max_length=128),
    limit: int = Query(10000, ge=1, le=10000),
    order: str = Query("desc", pattern="^(asc|desc)$"),
    project: str = Depends(project_of),
) -> dict[str, Any]:
    items, more = repo.list_files(
        request.app.state.store, project, purpose=purpose, after=after, limit=limit, order=order
    )
    return page([file_object(f) for f in items], more)


@router.get("/files/{file_id}")
def retrieve(request: Request, file_id: str, project: str = Depends(project_of)) -> dict[str, Any]:
    record = repo.get_file(request.app.state.store, project, file_id)
    if record is None:
        raise not_found("file", file_id)
    return file_object(record)


@router.delete("/files/{file_id}")
def delete(request: Request, file_id: str, project: str = Depends(project_of)) -> dict[str, Any]:
    record = repo.delete_file(request.app.state.store, project, file_id)
    if record is None:
        raise not_found("file", file_id)
    Path(record.path).unlink(missing_ok=True)
    import shutil

    shutil.rmtree(report_cache(request.app.state.settings, record.id), ignore_errors=True)
    return {"id": record.id, "object": "file", "deleted": True}


@router.get("/files/{file_id}/content")
def content(request: Request, file_id: str, project: str = Depends(project_of)) -> FileResponse:
    record = repo.get_file(request.app.state.store, project, file_id)
    if record is None or not Path(record.path).is_file():
        raise not_found("file", file_id)
    return FileResponse(record.path, media_type="application/octet-stream")


@router.get("/files/{file_id}/validation")
def validation(
    request: Request,
    file_id: str,
    model: str | None = Query(None, max_length=256),
    project: str = Depends(project_of),
) -> dict[str, Any]:
    """Our extension: the file's validation report. Without `model`: the upload's reading
    (structure; no tokenizer). With `model`: validated again under that base model's tokenizer
    and chat template, with token statistics and a trained-token preview."""
    settings = request.app.state.settings
    record = repo.get_file(request.app.state.store, project, file_id)
    if record is None:
        raise not_found("file", file_id)
    report = record.report
    if model is not None:
        if model not in settings.models:
            raise model_not_offered(model, settings.models, "used to read files")
        if not Path(record.path).is_file():
            raise not_found("file", file_id)
        report = token_report(settings, record, model)
    return {
        "object": "file.validation",
        "file_id": record.id,
        "filename": record.filename,
        "status": record.status,
        "status_details": record.status_details,
        "model": model,
        **public_report(record, report, settings, model),
    }
