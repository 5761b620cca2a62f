"""The two ways a grader object fails: before use (bad config) and while grading (one sample).

A bad grader must fail before training starts, with every bad field named at once
(`grader.operation: must be one of eq, ne, like, ilike`), so `GraderConfigError` carries the
whole list. A grader that fails on one sample says *why* in OpenAI's own vocabulary: the kinds
below are the flags of `metadata.errors` in the `/v1/fine_tuning/alpha/graders/run` response,
so the server reports them as they are and an RL trainer can count them per kind.
"""

from __future__ import annotations

from collections.abc import Sequence

from tunesmith.errors import ConfigError, TunesmithError

# The boolean flags of OpenAI's GraderRunResponse.metadata.errors, in its order.
ERROR_KINDS = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)


class GraderConfigError(ConfigError):
    """A grader object that cannot be used; `errors` lists every bad field, path first."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        first = self.errors[0] if self.errors else "invalid grader"
        more = f" (and {len(self.errors) - 1} more: {'; '.join(self.errors[1:])})"
        super().__init__(
            first + (more if len(self.errors) > 1 else ""),
            code="invalid_grader",
            param=first.partition(":")[0] or "grader",
        )


class GraderError(TunesmithError):
    """Grading one sample failed. `kind` is one of `ERROR_KINDS`; `grader` names the grader
    (inside a multi grader: the sub-grader) that failed.

    `sample_parse_error` is the model's fault (its output is not JSON, or lacks a key the
    template reads): a grader scores such a sample 0, as OpenAI does, instead of raising."""

    default_code = "grader_error"

    def __init__(self, kind: str, message: str, grader: str = ""):
        assert kind in ERROR_KINDS, kind
        super().__init__(message)
        self.kind = kind
        self.grader = grader
