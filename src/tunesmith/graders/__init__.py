"""Graders: one type for evaluation metrics and reinforcement-learning rewards.

A `Grader` has a `name` and `grade(sample, item) -> float`: `sample` is one model output
(`output_text`, `output_json` parsed lazily), `item` the reference row (`reference`, `prompt`,
other fields). `build_grader(spec, references)` turns the spec strings of `--metrics` into
graders. `build_grader_object(obj)` builds one from an OpenAI grader object (`string_check`,
`text_similarity`, `score_model`, `label_model`, `python`, `multi`, and our `json_schema` and
`numeric`); `validate_grader` lists its problems by field and `run_grader` answers in the shape
of OpenAI's `graders/run`. This package stands on `tunesmith.errors` and `tunesmith.events`,
and on `tunesmith.models` / `tunesmith.inference` for local judge models (imported only when a
judge first answers), so evaluation, training (RL rewards) and the server can all use it.
"""

from tunesmith.graders.base import NOT_JSON, Grader, Item, Sample, Score, parse_json
from tunesmith.graders.failures import ERROR_KINDS, GraderConfigError, GraderError
from tunesmith.graders.judge import JudgeSettings, JudgeSource, LocalJudges
from tunesmith.graders.objects import (
    ObjectGrader,
    build_grader_object,
    sub_grader_names,
    uses_python,
    validate_grader,
)
from tunesmith.graders.registry import (
    BUILTIN,
    build_grader,
    build_graders,
    default_grader_names,
    is_code_grader,
)
from tunesmith.graders.run import run_grader
from tunesmith.graders.sandbox import PythonLimits
from tunesmith.graders.structured import infer_schema

__all__ = [
    "BUILTIN",
    "ERROR_KINDS",
    "NOT_JSON",
    "Grader",
    "GraderConfigError",
    "GraderError",
    "Item",
    "JudgeSettings",
    "JudgeSource",
    "LocalJudges",
    "ObjectGrader",
    "PythonLimits",
    "Sample",
    "Score",
    "build_grader",
    "build_grader_object",
    "build_graders",
    "default_grader_names",
    "infer_schema",
    "is_code_grader",
    "parse_json",
    "run_grader",
    "sub_grader_names",
    "uses_python",
    "validate_grader",
]
