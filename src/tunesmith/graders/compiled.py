"""What a checked grader object turns into: a function of one grading `Run`, and its context.

Checking and running are separate steps so that everything that can be known before the first
sample (fields, templates, formula, the judge's name, the python source) fails at build time;
a compiled grader then only renders templates and scores. A `Run` is one sample beside one
item; it keeps the score of every (sub-)grader and the errors met on the way, which is what
OpenAI's `graders/run` response reports (`sub_rewards`, `metadata.scores`, `metadata.errors`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tunesmith.graders.base import Item, Sample
from tunesmith.graders.checks import Checker
from tunesmith.graders.failures import GraderError
from tunesmith.graders.judge import JudgeSource
from tunesmith.graders.sandbox import PythonLimits
from tunesmith.graders.templates import Template, Values, parse_template


class Run:
    """One grading: the template values, each grader's score, and the errors met."""

    def __init__(self, sample: Sample, item: Item):
        self.values = Values(sample, item)
        self.scores: dict[str, float] = {}
        self.sub_rewards: dict[str, float] = {}
        self.errors: list[GraderError] = []


Node = Callable[[Run], float]


@dataclass
class Compiled:
    node: Node
    bounded: bool = True
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Build:
    """What building one grader object may use, and the errors found so far."""

    check: Checker
    allow_python: bool = False
    judges: JudgeSource | None = None
    python_limits: PythonLimits = field(default_factory=PythonLimits)
    item: Mapping[str, Any] | None = None  # an example row: item references are checked on it
    run_sandbox: bool = True  # load python sources in the sandbox while checking

    def template(
        self, obj: Mapping[str, Any], key: str, path: str, default: str | None = None
    ) -> Template | None:
        value = obj.get(key, default)
        if value is None:
            self.check.error(f"{path}.{key}", "is required")
            return None
        template, errors = parse_template(value, f"{path}.{key}", self.item)
        self.check.errors.extend(errors)
        return template


def guarded(name: str, node: Node) -> Node:
    """`node`, scoring 0 when the sample is at fault (its output is not the JSON a template
    reads: OpenAI's `sample_parse_error`), recording the error and each score in the run."""

    def run(r: Run) -> float:
        try:
            value = node(r)
        except GraderError as exc:
            if not exc.grader:
                exc.grader = name
            if exc.kind != "sample_parse_error":
                raise
            r.errors.append(exc)
            value = 0.0
        r.scores[name] = value
        return value

    return run
