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
from tunesmith.service import ServerSettings

router = APIRouter()


class ValidateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]
    model_sample: str = Field(max_length=1_000_000)
    item: dict[str, Any] | None = None


def grader_options(settings: ServerSettings) -> dict[str, Any]:
    """What a grader may use on this server: python only where the operator enabled it, and
    the base models it offers as judges."""
    return {"allow_python": settings.allow_python_graders, "judges": dict(settings.models)}


def check_grader(
    settings: ServerSettings,
    grader: dict[str, Any],
    where: str = "grader",
    *,
    judges: dict[str, str] | None = None,
) -> None:
    """A 400 `invalid_grader` naming the first bad field (`param` is `where` + its path, e.g.
    `method.reinforcement.grader.operation`) unless the grader is usable here. The graders
    endpoints and reinforcement jobs both check with this, so they refuse the same things;
    `judges` narrows the judge models a score_model / label_model grader may name (default:
    every base model the server offers)."""
    from tunesmith import api

    options = grader_options(settings)
    if judges is not None:
        options["judges"] = judges
    problems = api.validate_grader(grader, **options)
    if problems:
        field = problems[0].split(":", 1)[0].strip().removeprefix("grader").lstrip(".")
        shown = [
            where + p.removeprefix("grader") if p.startswith("grader") else p for p in problems
        ]
        message = "invalid grader: " + "; ".join(shown[:20])
        if not settings.allow_python_graders and "python graders are not allowed" in message:
            message += (
                " — python graders run user code, so this server refuses them unless its "
                "operator sets TUNESMITH_ALLOW_PYTHON_GRADERS=1"
            )
        if judges == {} and any(p.split(":", 1)[0].endswith(".model") for p in problems):
            message += (
                " — reinforcement training here cannot load judge models yet: use a "
                "string_check, text_similarity, python or multi grader"
            )
        raise ApiError(
            400,
            message,
            code="invalid_grader",
            param=f"{where}.{field}" if field else where,
        )


def _options(request: Request) -> dict[str, Any]:
    return grader_options(request.app.state.settings)


def _check(request: Request, grader: dict[str, Any]) -> None:
    check_grader(request.app.state.settings, grader)


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
