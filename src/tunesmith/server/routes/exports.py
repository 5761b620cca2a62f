"""Our extension: exports of a succeeded job's model, run in the background (server/exports.py).

    POST   /v1/fine_tuning/jobs/{job_id}/exports                 {"format": "hf" | "gguf"}
    GET    /v1/fine_tuning/jobs/{job_id}/exports                 the job's exports (a list page)
    GET    /v1/fine_tuning/jobs/{job_id}/exports/{export_id}     one, with its status/progress
    GET    /v1/fine_tuning/jobs/{job_id}/exports/{export_id}/content[?file=NAME]
                                                                 the download: the GGUF, or a
                                                                 zip of the merged model; with
                                                                 `file`, one file it lists
    DELETE /v1/fine_tuning/jobs/{job_id}/exports/{export_id}     remove a finished one

The create is idempotent per job and format: while an export exists (queued, running or
succeeded) asking again returns it; a failed one is replaced. Another project's job is a 404,
as everywhere; asking before the job has succeeded is a 400.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse

from tunesmith.server.auth import project_of
from tunesmith.server.errors import ApiError, not_found
from tunesmith.server.schemas import ExportCreate, page
from tunesmith.store import repo
from tunesmith.store.records import JobRecord

router = APIRouter()


def _job(request: Request, project: str, job_id: str) -> JobRecord:
    job = repo.get_job(request.app.state.store, project, job_id)
    if job is None:
        raise not_found("job", job_id)
    return job


def _exportable(job: JobRecord) -> None:
    from tunesmith.runs import RunDir

    if job.status != "succeeded":
        raise ApiError(
            400,
            f"only a succeeded job's model can be exported; job {job.id} is {job.status}",
            code="invalid_job_state",
            param="fine_tuning_job_id",
        )
    if job.model_deleted:
        raise ApiError(
            400,
            f"the model of job {job.id} ({job.fine_tuned_model}) was deleted",
            code="model_deleted",
            param="fine_tuning_job_id",
        )
    if not job.run_dir or not RunDir(job.run_dir).has_final():
        raise ApiError(
            400,
            f"the trained model of job {job.id} is no longer on this server",
            code="model_not_found",
            param="fine_tuning_job_id",
        )


@router.post("/fine_tuning/jobs/{job_id}/exports")
def create(
    request: Request, job_id: str, body: ExportCreate, project: str = Depends(project_of)
) -> dict[str, Any]:
    job = _job(request, project, job_id)
    _exportable(job)
    return dict(request.app.state.exports.start(job, body.format))


@router.get("/fine_tuning/jobs/{job_id}/exports")
def list_exports(
    request: Request, job_id: str, project: str = Depends(project_of)
) -> dict[str, Any]:
    job = _job(request, project, job_id)
    return page(request.app.state.exports.list(job), False)


def _export(request: Request, job: JobRecord, export_id: str) -> dict[str, Any]:
    found = request.app.state.exports.get(job, export_id)
    if found is None:
        raise not_found("export", export_id)
    return dict(found)


@router.get("/fine_tuning/jobs/{job_id}/exports/{export_id}")
def retrieve(
    request: Request, job_id: str, export_id: str, project: str = Depends(project_of)
) -> dict[str, Any]:
    return _export(request, _job(request, project, job_id), export_id)


@router.get("/fine_tuning/jobs/{job_id}/exports/{export_id}/content")
def content(
    request: Request,
    job_id: str,
    export_id: str,
    file: str | None = Query(None, max_length=255),
    project: str = Depends(project_of),
) -> FileResponse:
    job = _job(request, project, job_id)
    state = _export(request, job, export_id)
    if state["status"] != "succeeded":
        raise ApiError(
            400,
            f"export {export_id} is {state['status']}; its files can be downloaded once it "
            "has succeeded",
            code="export_not_ready",
        )
    found = request.app.state.exports.download(job, export_id, file)
    if found is None:
        listed = ", ".join(f["name"] for f in state.get("files") or [])
        raise ApiError(
            404,
            f"export {export_id} has no file {file!r} (it has: {listed})",
            code="file_not_found",
            param="file",
        )
    path, name = found
    return FileResponse(path, media_type="application/octet-stream", filename=name)


@router.delete("/fine_tuning/jobs/{job_id}/exports/{export_id}")
def delete(
    request: Request, job_id: str, export_id: str, project: str = Depends(project_of)
) -> dict[str, Any]:
    job = _job(request, project, job_id)
    gone = request.app.state.exports.delete(job, export_id)
    if gone is None:
        raise not_found("export", export_id)
    if gone is False:
        raise ApiError(
            400,
            f"export {export_id} is still running; delete it once it has finished",
            code="export_running",
        )
    return {"id": export_id, "object": "fine_tuning.job.export", "deleted": True}
