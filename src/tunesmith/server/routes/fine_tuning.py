"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, pause, resume, events (paged or as
Server-Sent Events), checkpoints, and our extensions `/evaluation` (the base-vs-tuned verdict) and
`POST /v1/tunesmith/fine_tuning/estimates` (the job-creation body: what the job would train
with, `auto` resolved and explained, and how long it would take, before it is launched).

`method` is OpenAI's: `supervised`, `dpo` (hyperparameters + beta) or `reinforcement` (a
grader object + hyperparameters); a bad grader, a block for another type or a method this
version cannot train yet is a 400 naming the field. A job is created in `validating_files`: its
files must be this project's, uploaded for fine-tuning, valid, and of the kind the method
learns from (a chat file cannot feed DPO, preference pairs cannot feed supervised training) —
otherwise the job fails at once with `invalid_training_file` / `invalid_validation_file` and
the lines. Then it is `queued` for a worker (tunesmith.worker). Terminal statuses never change
(the store enforces it).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from tunesmith.server.auth import project_of
from tunesmith.server.errors import ApiError, model_not_offered, not_found
from tunesmith.server.filecheck import file_problem
from tunesmith.server.routes.graders import check_grader
from tunesmith.server.schemas import (
    JobCreate,
    checkpoint_object,
    event_object,
    job_object,
    page,
)
from tunesmith.store import repo
from tunesmith.store.records import JobRecord

router = APIRouter()
TERMINAL = {"succeeded", "failed", "cancelled"}
STREAM_POLL_S = 0.25
STREAM_MAX_S = 6 * 3600.0


def _job(request: Request, project: str, job_id: str) -> JobRecord:
    job = repo.get_job(request.app.state.store, project, job_id)
    if job is None:
        raise not_found("job", job_id)
    return job


def _check_file(request: Request, project: str, file_id: str | None, param: str) -> Any:
    if file_id is None:
        return None
    record = repo.get_file(request.app.state.store, project, file_id)
    if record is None:
        raise ApiError(
            400, f"invalid {param}: no such file {file_id!r}", code="invalid_file", param=param
        )
    if record.purpose != "fine-tune":
        raise ApiError(
            400,
            f"{param} {file_id!r} was not uploaded with purpose 'fine-tune'",
            code="invalid_file",
            param=param,
        )
    return record


def training_judges(settings: Any) -> dict[str, str]:
    """The judge models a reinforcement job's grader may name: the server's base models once
    the run spec can carry them to training (a `judges` option of the reinforcement method,
    which the worker fills from the operator's models: worker.judges_of), none before — so a
    score_model grader is refused at create rather than failing its job as training starts."""
    from tunesmith.config import ReinforcementOptions

    return dict(settings.models) if "judges" in ReinforcementOptions.model_fields else {}


def _method(request: Request, body: JobCreate) -> dict[str, Any]:
    """The job's `method` as stored: its type and its block's settings besides the
    hyperparameters (a reinforcement job's grader, checked here as graders/validate checks
    it). A block for another type than `method.type`, or a method this version cannot train
    yet (tunesmith.config.METHODS_NOT_YET, the table training and the data layer use), is a 400
    before anything is stored."""
    from tunesmith.config import METHODS_NOT_YET

    kind = body.method_type
    if body.method is not None:
        for other in ("supervised", "dpo", "reinforcement"):
            if other != kind and getattr(body.method, other) is not None:
                raise ApiError(
                    400,
                    f"method.{other} is given but method.type is {kind!r}; "
                    f"put the settings under method.{kind}",
                    code="invalid_method",
                    param=f"method.{other}",
                )
    method: dict[str, Any] = {"type": kind}
    if kind == "reinforcement":
        block = body.method.reinforcement if body.method is not None else None
        if block is None:
            raise ApiError(
                400,
                "a reinforcement job needs method.reinforcement.grader (a grader object that "
                "scores the sampled answers)",
                code="invalid_method",
                param="method.reinforcement.grader",
            )
        settings = request.app.state.settings
        check_grader(
            settings, block.grader, "method.reinforcement.grader", judges=training_judges(settings)
        )
        method["reinforcement"] = {"grader": block.grader}
    if kind in METHODS_NOT_YET:
        raise ApiError(
            400,
            f"method {kind!r}: {METHODS_NOT_YET[kind]}",
            code="unsupported_method",
            param="method.type",
        )
    return method


def _check_model(request: Request, model: str) -> None:
    settings = request.app.state.settings
    if model not in settings.models:
        raise model_not_offered(model, settings.models, "fine-tuned")


@router.post("/fine_tuning/jobs")
def create(request: Request, body: JobCreate, project: str = Depends(project_of)) -> dict[str, Any]:
    store = request.app.state.store
    _check_model(request, body.model)
    method = _method(request, body)
    train = _check_file(request, project, body.training_file, "training_file")
    val = _check_file(request, project, body.validation_file, "validation_file")
    hyper = body.hyper()
    job = repo.create_job(
        store,
        project,
        model=body.model,
        training_file=body.training_file,
        validation_file=body.validation_file,
        suffix=body.suffix or None,
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        metadata=body.metadata or {},
        method=method,
        hyperparameters=hyper,
    )
    notes = [{"level": "info", "message": "Validating training file", "type": "message"}]
    if hyper.get("reasoning_effort", "default") != "default":
        text = (
            f"reasoning_effort {hyper['reasoning_effort']!r} changes nothing here: "
            "the models this server trains have no reasoning mode"
        )
        notes.insert(0, {"level": "warn", "message": text, "type": "message"})
    repo.add_events(store, job.id, notes)
    for record, param in ((train, "training_file"), (val, "validation_file")):
        error = file_problem(record, param, method["type"]) if record is not None else None
        if error is not None:
            failed = repo.transition(store, job.id, "failed", error=error)
            repo.add_events(
                store, job.id, [{"level": "error", "message": error["message"], "type": "message"}]
            )
            return job_object(failed or job)
    queued = repo.transition(store, job.id, "queued", expect={"validating_files"})
    repo.add_events(
        store,
        job.id,
        [{"level": "info", "message": "Files validated; job queued", "type": "message"}],
    )
    return job_object(queued or repo.get_job(store, project, job.id) or job)


@router.post("/tunesmith/fine_tuning/estimates")
def estimate(
    request: Request, body: JobCreate, project: str = Depends(project_of)
) -> dict[str, Any]:
    """Our extension: the job this body would create, before it is created — its files checked
    as creating it checks them (a file the method cannot train on is a 400 here, where the job
    would fail), the automatic hyperparameters resolved with their reasons, the values the
    request or the operator fixes, and the time estimate (server/estimates.py)."""
    from tunesmith.server.estimates import estimate as make_estimate
    from tunesmith.server.filecheck import scrubber

    settings = request.app.state.settings
    _check_model(request, body.model)
    method = _method(request, body)
    train = _check_file(request, project, body.training_file, "training_file")
    val = _check_file(request, project, body.validation_file, "validation_file")
    for record, param in ((train, "training_file"), (val, "validation_file")):
        error = file_problem(record, param, method["type"]) if record is not None else None
        if error is not None:
            raise ApiError(400, error["message"], code=error["code"], param=param)
    hyper = body.hyper()
    out = make_estimate(
        settings,
        request.app.state.estimates,
        model=body.model,
        method=method["type"],
        hyper=hyper,
        train=train,
        validation=val,
    )
    scrub = scrubber(
        [
            *((str(r.path), r.filename) for r in (train, val) if r is not None),
            (str(settings.models[body.model]), body.model),
            (str(settings.home), "$TUNESMITH_HOME"),
        ]
    )
    return {
        "object": "tunesmith.fine_tuning.estimate",
        "model": body.model,
        "training_file": body.training_file,
        "validation_file": body.validation_file,
        "method": method["type"],
        **scrub(out),
    }


@router.get("/fine_tuning/jobs")
def list_jobs(
    request: Request,
    after: str | None = Query(None, max_length=128),
    limit: int = Query(20, ge=1, le=100),
    project: str = Depends(project_of),
) -> dict[str, Any]:
    metadata = {
        k[len("metadata[") : -1]: v
        for k, v in request.query_params.items()
        if k.startswith("metadata[") and k.endswith("]")
    }
    items, more = repo.list_jobs(
        request.app.state.store, project, after=after, limit=limit, metadata=metadata or None
    )
    return page([job_object(j) for j in items], more)


@router.get("/fine_tuning/jobs/{job_id}")
def retrieve(request: Request, job_id: str, project: str = Depends(project_of)) -> dict[str, Any]:
    return job_object(_job(request, project, job_id))


ALLOWED = {
    "cancel": {"validating_files", "queued", "running", "pausing", "paused"},
    "pause": {"validating_files", "queued", "running"},
    "resume": {"paused"},
}


def _control(request: Request, project: str, job_id: str, action: str) -> dict[str, Any]:
    store = request.app.state.store
    before = _job(request, project, job_id)
    if before.status not in ALLOWED[action]:
        # 400, not 409: the SDK retries a 409, and a retry cannot change a job's state
        raise ApiError(
            400,
            f"cannot {action} a job that is {before.status}",
            code="invalid_job_state",
            param="fine_tuning_job_id",
        )
    fn = {"cancel": repo.cancel_job, "pause": repo.pause_job, "resume": repo.resume_job}[action]
    after = fn(store, project, job_id)
    if after is None:
        raise not_found("job", job_id)
    repo.add_events(
        store,
        job_id,
        [
            {
                "level": "info",
                "type": "message",
                "message": f"{action} requested: job is {after.status}",
            }
        ],
    )
    return job_object(after)


@router.post("/fine_tuning/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str, project: str = Depends(project_of)) -> dict[str, Any]:
    return _control(request, project, job_id, "cancel")


@router.post("/fine_tuning/jobs/{job_id}/pause")
def pause(request: Request, job_id: str, project: str = Depends(project_of)) -> dict[str, Any]:
    return _control(request, project, job_id, "pause")


@router.post("/fine_tuning/jobs/{job_id}/resume")
def resume(request: Request, job_id: str, project: str = Depends(project_of)) -> dict[str, Any]:
    return _control(request, project, job_id, "resume")


@router.get("/fine_tuning/jobs/{job_id}/events", response_model=None)
def events(
    request: Request,
    job_id: str,
    after: str | None = Query(None, max_length=128),
    limit: int = Query(20, ge=1, le=1000),
    stream: bool = Query(False),
    project: str = Depends(project_of),
) -> dict[str, Any] | StreamingResponse:
    job = _job(request, project, job_id)
    store = request.app.state.store
    if stream:
        return StreamingResponse(
            _sse(request, job.id),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    items, more = repo.list_events(store, job.id, after=after, limit=limit)
    return page([event_object(e) for e in items], more)


async def _sse(request: Request, job_id: str) -> AsyncIterator[bytes]:
    """Every event of the job in order (from the first), then new ones as they come; ends with
    `data: [DONE]` once the job is terminal and drained, or when the client goes away."""
    store, seq, started = request.app.state.store, 0, time.monotonic()
    while time.monotonic() - started < STREAM_MAX_S:
        job = repo.get_job_any(store, job_id)
        fresh = repo.events_since(store, job_id, seq)
        for e in fresh:
            seq = e.seq
            yield f"data: {json.dumps(event_object(e))}\n\n".encode()
        if job is None or (job.status in TERMINAL and not fresh):
            break
        if await request.is_disconnected():
            return
        await asyncio.sleep(STREAM_POLL_S)
    yield b"data: [DONE]\n\n"


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def checkpoints(
    request: Request,
    job_id: str,
    after: str | None = Query(None, max_length=128),
    limit: int = Query(10, ge=1, le=100),
    project: str = Depends(project_of),
) -> dict[str, Any]:
    job = _job(request, project, job_id)
    items, more = repo.list_checkpoints(request.app.state.store, job.id, after=after, limit=limit)
    return page([checkpoint_object(c) for c in items], more)


@router.get("/fine_tuning/jobs/{job_id}/evaluation")
def evaluation(request: Request, job_id: str, project: str = Depends(project_of)) -> dict[str, Any]:
    """Our extension: the job's base-vs-tuned comparison (RUN/eval/results.json)."""
    from tunesmith import api

    job = _job(request, project, job_id)
    result = api.read_evaluation(job.run_dir) if job.run_dir else None
    if result is None:
        raise ApiError(
            404,
            f"job {job_id} has no evaluation yet (it needs a validation_file and a finished run)",
            code="evaluation_not_found",
        )
    return {
        "object": "fine_tuning.job.evaluation",
        "fine_tuning_job_id": job.id,
        **_public_evaluation(result, job),
    }


def _public_evaluation(result: dict[str, Any], job: Any) -> dict[str, Any]:
    """The comparison as a client may see it: the run wrote server paths (the base model's
    directory, the run's final adapter, the validation file under our storage, each sample's
    file:line); a client gets the job's public names and line numbers instead."""
    out = dict(result)
    if out.get("base_model") is not None:
        out["base_model"] = job.model
    if "tuned_model" in out:
        out["tuned_model"] = job.fine_tuned_model or job.id
    if "data" in out:
        out["data"] = job.validation_file
    samples = out.get("samples")
    if isinstance(samples, list):
        out["samples"] = [_public_sample(s) for s in samples]
    return out


def _public_sample(sample: Any) -> Any:
    if not isinstance(sample, dict) or not isinstance(sample.get("source"), str):
        return sample
    _, _, line = sample["source"].rpartition(":")
    return {**sample, "source": f"line {line}" if line.isdigit() else None}
