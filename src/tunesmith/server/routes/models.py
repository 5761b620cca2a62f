"""/v1/models: the base models the operator offers, this project's fine-tuned models and
their checkpoints (`…:ckpt-step-N`). `target()` turns a public name into what the model
registry loads — only names listed here can ever reach the loader (no paths from requests)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from tunesmith.server.auth import project_of
from tunesmith.server.errors import ApiError, not_found
from tunesmith.server.schemas import model_object
from tunesmith.store import repo

router = APIRouter()


def target(request: Request, project: str, name: str) -> str:
    """What to load for the public model `name` (404 when this project has no such model)."""
    settings = request.app.state.settings
    if name in settings.models:
        return str(settings.models[name])
    found = repo.find_model(request.app.state.store, project, name)
    if found is None:
        raise ApiError(
            404,
            f"The model {name!r} does not exist or you do not have access to it",
            code="model_not_found",
            param="model",
        )
    job, ckpt = found
    if not job.run_dir or (ckpt is None and job.status != "succeeded"):
        raise not_found("model", name, param="model")
    if ckpt is not None:
        return f"{job.run_dir}@step-{ckpt.step}"
    return str(job.run_dir)


def _all(request: Request, project: str) -> list[dict[str, Any]]:
    store, settings = request.app.state.store, request.app.state.settings
    started = int(request.app.state.started)
    out = [model_object(name, started, "tunesmith") for name in sorted(settings.models)]
    for job, ckpt in repo.list_models(store, project):
        if ckpt is None and job.fine_tuned_model:
            out.append(
                model_object(job.fine_tuned_model, job.finished_at or job.created_at, project)
            )
        elif ckpt is not None:
            out.append(model_object(ckpt.fine_tuned_model_checkpoint, ckpt.created_at, project))
    return out


@router.get("/models")
def list_models(request: Request, project: str = Depends(project_of)) -> dict[str, Any]:
    return {"object": "list", "data": _all(request, project)}


@router.get("/models/{model:path}")
def retrieve(request: Request, model: str, project: str = Depends(project_of)) -> dict[str, Any]:
    for m in _all(request, project):
        if m["id"] == model:
            return m
    raise ApiError(
        404,
        f"The model {model!r} does not exist or you do not have access to it",
        code="model_not_found",
        param="model",
    )


@router.delete("/models/{model:path}")
def delete(request: Request, model: str, project: str = Depends(project_of)) -> dict[str, Any]:
    settings = request.app.state.settings
    if model in settings.models:
        raise ApiError(
            403, f"base model {model!r} cannot be deleted", code="permission_denied", param="model"
        )
    found = repo.find_model(request.app.state.store, project, model)
    if found is None or not repo.delete_model(request.app.state.store, project, model):
        raise ApiError(
            404,
            f"The model {model!r} does not exist or you do not have access to it",
            code="model_not_found",
            param="model",
        )
    pool = request.app.state.pool
    job, ckpt = found
    if job.run_dir:
        served = f"{job.run_dir}@step-{ckpt.step}" if ckpt else str(job.run_dir)
        pool.drop(served)
        if request.app.state.gguf is not None:
            request.app.state.gguf.forget(served)  # its llama.cpp export, if one was made
    return {"id": model, "object": "model", "deleted": True}
