"""/v1/fine_tuning/alpha/graders/validate and /run: OpenAI's grader objects, checked and run.

A `python` grader is user code: it runs only where the operator enabled it
(`TUNESMITH_ALLOW_PYTHON_GRADERS=1`), and then in its own process with time and memory limits
and no network (tunesmith.graders.sandbox). A `score_model` judge may be any base model this
server offers, nothing else.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from tunesmith.server.auth import project_of
from tunesmith.server.errors import ApiError

router = APIRouter()


class ValidateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]
    model_sample: str = Field(max_length=1_000_000)
    item: dict[str, Any] | None = None


def _options(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    return {"allow_python": settings.allow_python_graders, "judges": dict(settings.models)}


def _check(request: Request, grader: dict[str, Any]) -> None:
    from tunesmith import api

    problems = api.validate_grader(grader, **_options(request))
    if problems:
        param = "grader." + problems[0].split(":", 1)[0].removeprefix("grader.").strip()
        raise ApiError(
            400,
            "invalid grader: " + "; ".join(problems[:20]),
            code="invalid_grader",
            param=param.rstrip("."),
        )


@router.post("/fine_tuning/alpha/graders/validate")
def validate(
    request: Request, body: ValidateBody, project: str = Depends(project_of)
) -> dict[str, Any]:
    _check(request, body.grader)
    return {"grader": body.grader}


@router.post("/fine_tuning/alpha/graders/run")
def run(request: Request, body: RunBody, project: str = Depends(project_of)) -> dict[str, Any]:
    from tunesmith import api

    _check(request, body.grader)
    return api.run_grader(body.grader, body.model_sample, body.item, **_options(request))
