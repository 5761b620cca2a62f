"""Graders from OpenAI grader objects: the dicts of reinforcement fine-tuning and `graders/run`.

`build_grader_object(obj)` checks an object and returns the same `Grader` evaluation uses, so
the grader a user trusts in the base-vs-tuned report is exactly the reward a policy trains on.
Types: OpenAI's `string_check`, `text_similarity`, `score_model`, `label_model`, `python` and
`multi`, plus our `json_schema` and `numeric` (`kinds.py`). `validate_grader(obj)` returns
every problem as `path: message` (what `/v1/fine_tuning/alpha/graders/validate` reports);
`run_grader` (`run.py`) answers in the shape of OpenAI's `graders/run` response.

`multi` combines named sub-graders with `calculate_output` (`formula.py`, parsed, never
eval'd); as in OpenAI a multi grader does not nest another one. The OpenAI SDK types `graders`
as one grader object; the API and its guide use a map of names to graders: both are read.

Scoring: a sample whose answer is not the JSON a template reads scores 0 (recorded as
`sample_parse_error`); any other failure (an item lacking a field, a python grader's error
or time-out, a judge's unreadable answer) raises `GraderError` from `grade()`, with OpenAI's
error kind, so a trainer decides (OpenAI's own reward for it is 0) and a report never counts
a broken grader as a bad model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tunesmith.graders.base import Grader, Item, Sample
from tunesmith.graders.checks import Checker
from tunesmith.graders.compiled import Build, Compiled, Node, Run, guarded
from tunesmith.graders.failures import GraderConfigError
from tunesmith.graders.formula import FUNCTIONS, FormulaError, evaluate, names_in, parse
from tunesmith.graders.judge import JudgeSource
from tunesmith.graders.kinds import KINDS
from tunesmith.graders.sandbox import PythonLimits

TYPES = (*KINDS, "multi")


@dataclass(frozen=True)
class ObjectGrader(Grader):
    """A `Grader` built from a grader object: `kind` is its type; `node` grades one `Run`
    keeping every sub-score and error (what `run_grader` reports)."""

    kind: str = ""
    node: Node | None = field(default=None, compare=False, repr=False)

    def run(self, sample: Sample, item: Item) -> tuple[float, Run]:
        """Grade, returning the score and the run (sub-scores, sample errors)."""
        assert self.node is not None
        r = Run(sample, item)
        return self.node(r), r


def sub_grader_names(grader: Any) -> list[str]:
    """The names of a multi grader's sub-graders, in order (none for other graders): what a
    trainer or a report shows one sub-reward each for."""
    if not isinstance(grader, Mapping) or grader.get("type") != "multi":
        return []
    subs = grader.get("graders")
    if isinstance(subs, Mapping) and isinstance(subs.get("type"), str):  # the SDK's one grader
        return [str(subs.get("name") or "grader")]
    return [str(k) for k in subs] if isinstance(subs, Mapping) else []


def uses_python(grader: Any) -> bool:
    """Whether a grader object is, or contains, a python grader (user code)."""
    if isinstance(grader, Mapping):
        return grader.get("type") == "python" or any(uses_python(v) for v in grader.values())
    if isinstance(grader, list):
        return any(uses_python(v) for v in grader)
    return False


def _multi(obj: Mapping[str, Any], path: str, b: Build) -> Compiled | None:
    b.check.keys(obj, path, ("type", "name", "graders", "calculate_output"))
    graders = obj.get("graders")
    if isinstance(graders, Mapping) and isinstance(graders.get("type"), str):
        graders = {str(graders.get("name") or "grader"): graders}  # the SDK's one-grader shape
    if not isinstance(graders, Mapping) or not graders:
        b.check.error(f"{path}.graders", 'must be an object of named graders, e.g. {"a": {...}}')
        return None
    subs: dict[str, Node] = {}
    details: dict[str, Any] = {}
    for key, sub in graders.items():
        where = f"{path}.graders.{key}"
        if not (isinstance(key, str) and key.isidentifier() and key.isascii()) or key in FUNCTIONS:
            b.check.error(
                where,
                "a sub-grader's name must be usable in calculate_output (letters, digits and _, "
                f"not starting with a digit, not one of {', '.join(FUNCTIONS)})",
            )
            continue
        if isinstance(sub, Mapping) and sub.get("type") == "multi":
            b.check.error(f"{where}.type", "a multi grader cannot contain another multi grader")
            continue
        built = _compile(sub, where, b, default_name=key)
        if built is not None:
            subs[key] = guarded(key, built.node)
            if built.details:
                details[key] = built.details
    formula = obj.get("calculate_output")
    try:
        if not isinstance(formula, str):
            raise FormulaError(
                "is required: a formula over the sub-graders' names, e.g. (a + b) / 2"
            )
        tree = parse(formula, graders.keys())
    except FormulaError as exc:
        b.check.error(f"{path}.calculate_output", str(exc))
        return None
    unused = sorted(set(subs) - names_in(tree))
    if len(subs) != len(graders):
        return None

    def node(r: Run) -> float:
        values = {key: sub(r) for key, sub in subs.items()}
        r.sub_rewards.update(values)
        return evaluate(tree, values)

    return Compiled(node, bounded=False, details={"graders": details, "unused": unused})


def _compile(obj: Any, path: str, b: Build, default_name: str | None = None) -> Compiled | None:
    m = b.check.mapping(obj, path)
    if m is None:
        return None
    kind = m.get("type")
    if kind not in TYPES:
        b.check.error(f"{path}.type", f"must be one of {', '.join(TYPES)} (got {kind!r})")
        return None
    b.check.string(m, "name", path, required=default_name is None)
    return _multi(m, path, b) if kind == "multi" else KINDS[kind](m, path, b)


def _build(
    obj: Any,
    *,
    allow_python: bool,
    judges: JudgeSource | None,
    python_limits: PythonLimits | None,
    item: Mapping[str, Any] | None,
) -> tuple[Compiled | None, list[str]]:
    b = Build(Checker(), allow_python, judges, python_limits or PythonLimits(), item)
    compiled = _compile(obj, "grader", b)
    return (None if b.check.errors else compiled), b.check.errors


def validate_grader(
    obj: Any,
    *,
    allow_python: bool = False,
    judges: JudgeSource | None = None,
    python_limits: PythonLimits | None = None,
    item: Mapping[str, Any] | None = None,
) -> list[str]:
    """Every problem of the grader object, as `path: message` (empty: it is usable).

    A python grader's source is compiled and loaded in the sandbox; with `item` (an example
    dataset row) the item references of the templates are checked against it too."""
    return _build(
        obj, allow_python=allow_python, judges=judges, python_limits=python_limits, item=item
    )[1]


def build_grader_object(
    obj: Any,
    *,
    allow_python: bool = False,
    judges: JudgeSource | None = None,
    python_limits: PythonLimits | None = None,
    item: Mapping[str, Any] | None = None,
) -> ObjectGrader:
    """The `Grader` for a grader object; raises `GraderConfigError` listing every problem.

    `allow_python`: python graders run user code (in a sandbox, see `sandbox.py`); refused
    unless the caller allows them. `judges`: the judge models `score_model` / `label_model`
    may name (`LocalJudges`); none by default."""
    compiled, errors = _build(
        obj, allow_python=allow_python, judges=judges, python_limits=python_limits, item=item
    )
    if compiled is None:
        raise GraderConfigError(errors)
    name, kind = str(obj["name"]), str(obj["type"])
    node = guarded(name, compiled.node)

    def score(sample: Sample, item: Item) -> float:
        return node(Run(sample, item))

    return ObjectGrader(
        name,
        score,
        description=f"{kind} grader {name}",
        bounded=compiled.bounded,
        details={"grader": dict(obj), "type": kind, **compiled.details},
        kind=kind,
        node=node,
    )
