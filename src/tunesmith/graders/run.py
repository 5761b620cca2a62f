"""`run_grader`: one sample through a grader, answered in OpenAI's `graders/run` shape.

The server's `POST /v1/fine_tuning/alpha/graders/run` returns this dict as it is, so a client
of OpenAI's SDK reads it as a `GraderRunResponse`: `reward`, `sub_rewards` (a multi grader's
sub-grader scores), `model_grader_token_usage_per_model`, and `metadata` with `name`, `type`,
`execution_time`, `scores` and `errors` (every flag of OpenAI's `MetadataErrors`, with its
detail strings). A failure while grading is not an exception here but reward 0 with the flag
set, as OpenAI answers; `metadata.error_messages` (ours, extra) says what went wrong in words.
An unusable grader object raises `GraderConfigError` (a 400 for the server).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from tunesmith.graders.base import Item, Sample
from tunesmith.graders.compiled import Run
from tunesmith.graders.failures import ERROR_KINDS, GraderConfigError, GraderError
from tunesmith.graders.judge import JudgeSource
from tunesmith.graders.objects import ObjectGrader, build_grader_object
from tunesmith.graders.sandbox import PythonLimits

_PYTHON_KINDS = ("python_grader_runtime_error", "unresponsive_reward_error")


def _item(item: Item | Mapping[str, Any] | None) -> Item:
    if isinstance(item, Item):
        return item
    if item is None:
        return Item()
    if not isinstance(item, Mapping):
        raise GraderConfigError([f"item: must be an object (got {type(item).__name__})"])
    reference = item.get("reference")
    return Item(reference if isinstance(reference, str) else "", (), item)


def errors_metadata(errors: list[GraderError]) -> dict[str, Any]:
    """OpenAI's `metadata.errors`: every flag, True for the kinds met, and the details."""
    out: dict[str, Any] = {kind: False for kind in ERROR_KINDS}
    out.update(
        model_grader_server_error_details=None,
        python_grader_runtime_error_details=None,
        python_grader_server_error_type=None,
    )
    for exc in errors:
        out[exc.kind] = True
        if exc.kind in _PYTHON_KINDS and out["python_grader_runtime_error_details"] is None:
            out["python_grader_runtime_error_details"] = exc.message
        elif exc.kind == "model_grader_server_error":
            out["model_grader_server_error_details"] = exc.message
        elif exc.kind == "python_grader_server_error":
            out["python_grader_server_error_type"] = "sandbox_start"
    return out


def run_grader(
    grader: ObjectGrader | Mapping[str, Any],
    model_sample: str | Sample,
    item: Item | Mapping[str, Any] | None = None,
    *,
    allow_python: bool = False,
    judges: JudgeSource | None = None,
    python_limits: PythonLimits | None = None,
) -> dict[str, Any]:
    """Grade `model_sample` against `item` (a dataset row) with `grader` (a grader object or
    an already built one); the answer has OpenAI's `graders/run` response shape."""
    if not isinstance(grader, ObjectGrader):
        grader = build_grader_object(
            grader, allow_python=allow_python, judges=judges, python_limits=python_limits
        )
    sample = model_sample if isinstance(model_sample, Sample) else Sample(str(model_sample))
    row = _item(item)
    started = time.perf_counter()
    assert grader.node is not None
    run = Run(sample, row)
    try:
        reward = grader.node(run)
    except GraderError as exc:
        run.errors.append(exc)
        reward = 0.0
    except Exception as exc:  # a bug of ours must still answer in the response's shape
        run.errors.append(GraderError("other_error", f"{type(exc).__name__}: {exc}", grader.name))
        reward = 0.0
    return {
        "reward": reward,
        "sub_rewards": dict(run.sub_rewards),
        "model_grader_token_usage_per_model": {},
        "metadata": {
            "name": grader.name,
            "type": grader.kind,
            "errors": errors_metadata(run.errors),
            "execution_time": time.perf_counter() - started,
            "scores": dict(run.scores),
            "token_usage": None,
            "sampled_model_name": None,
            "error_messages": [
                f"{exc.grader}: {exc.message}" if exc.grader else exc.message for exc in run.errors
            ],
        },
    }
