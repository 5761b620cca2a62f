"""Graders: one type for evaluation metrics and reinforcement-learning rewards.

A `Grader` has a `name` and `grade(sample, item) -> float`: `sample` is one model output
(`output_text`, `output_json` parsed lazily), `item` the reference row (`reference`, `prompt`,
other fields). `build_grader(spec, references)` turns the spec strings of `--metrics` into
graders. This package stands on `tunesmith.errors` only, so evaluation, training (RL rewards)
and the server can all use it.
"""

from tunesmith.graders.base import NOT_JSON, Grader, Item, Sample, Score, parse_json
from tunesmith.graders.registry import (
    BUILTIN,
    build_grader,
    build_graders,
    default_grader_names,
)
from tunesmith.graders.structured import infer_schema

__all__ = [
    "BUILTIN",
    "NOT_JSON",
    "Grader",
    "Item",
    "Sample",
    "Score",
    "build_grader",
    "build_graders",
    "default_grader_names",
    "infer_schema",
    "parse_json",
]
