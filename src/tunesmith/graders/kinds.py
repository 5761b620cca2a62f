"""The leaf grader types, in OpenAI's object shapes, plus our `numeric` and `json_schema`.

- `string_check`: `input` vs `reference` with `operation` eq / ne / like / ilike, exactly as
  OpenAI defines them: eq and ne compare the texts exactly (case-sensitive, no trimming); like
  is 1 when input *contains* reference, ilike the same ignoring case. Not SQL patterns.
- `text_similarity`: `evaluation_metric` from `textmetrics` (libraries, not hand-written).
- `numeric` (ours): `input` and `reference` are numbers within `tolerance`
  (`tolerance_type` absolute, the default, or relative to the reference); `extract` picks
  the number out of prose (`first` / `last`) instead of requiring the whole text (`whole`).
- `json_schema` (ours): `input` (default: the whole answer) is JSON conforming to `schema`.
- `python`: `source` defining `grade(sample, item) -> float`, run in the sandbox; refused
  unless the caller allows python graders (a server gates it on its operator's setting).
- `score_model` / `label_model`: a local judge; see `model_kinds.py`.

Each builder checks the fields (errors go to the `Build`'s checker, named by path) and
returns a `Compiled`, or None when the object is unusable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tunesmith.errors import ConfigError
from tunesmith.graders import structured, textmetrics
from tunesmith.graders.base import NOT_JSON, Sample
from tunesmith.graders.compiled import Build, Compiled, Run
from tunesmith.graders.failures import GraderError
from tunesmith.graders.model_kinds import label_model, score_model
from tunesmith.graders.sandbox import check_source, run_source
from tunesmith.graders.templates import Template

OPERATIONS = ("eq", "ne", "like", "ilike")
_BASE = ("type", "name")

_NUM = r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER = re.compile(_NUM)


def _compare(operation: str, text: str, reference: str) -> bool:
    if operation == "eq":
        return text == reference
    if operation == "ne":
        return text != reference
    if operation == "like":
        return reference in text
    return reference.lower() in text.lower()


def string_check(obj: Mapping[str, Any], path: str, b: Build) -> Compiled | None:
    b.check.keys(obj, path, (*_BASE, "input", "reference", "operation"))
    text, ref = b.template(obj, "input", path), b.template(obj, "reference", path)
    operation = b.check.choice(obj, "operation", path, OPERATIONS)
    if text is None or ref is None or operation is None:
        return None

    def node(r: Run) -> float:
        return float(_compare(operation, text.render(r.values), ref.render(r.values)))

    return Compiled(node)


def text_similarity(obj: Mapping[str, Any], path: str, b: Build) -> Compiled | None:
    b.check.keys(obj, path, (*_BASE, "input", "reference", "evaluation_metric", "pass_threshold"))
    text, ref = b.template(obj, "input", path), b.template(obj, "reference", path)
    b.check.number(obj, "pass_threshold", path)
    metric_name = obj.get("evaluation_metric")
    if isinstance(metric_name, str) and metric_name in textmetrics.UNAVAILABLE:
        b.check.error(
            f"{path}.evaluation_metric",
            f"{metric_name} is not available here: {textmetrics.UNAVAILABLE[metric_name]}",
        )
        return None
    metric_name = b.check.choice(obj, "evaluation_metric", path, tuple(textmetrics.METRICS))
    if text is None or ref is None or metric_name is None:
        return None
    metric = textmetrics.METRICS[metric_name]
    details: dict[str, Any] = {}
    if metric_name == "meteor":
        details["meteor_synonyms"] = textmetrics.meteor_synonyms()

    def node(r: Run) -> float:
        return metric(text.render(r.values), ref.render(r.values))

    return Compiled(node, details=details)


def number_in(text: str, extract: str = "whole") -> float | None:
    """The number `text` is (`whole`), or the first / last number in it."""
    if extract == "whole":
        stripped = text.strip()
        found = [stripped] if _NUMBER.fullmatch(stripped) else []
    else:
        found = _NUMBER.findall(text)
    if not found:
        return None
    return float((found[0] if extract != "last" else found[-1]).replace(",", ""))


def _kind_for(template: Template) -> str:
    """Whose fault an unreadable number is: the sample's if the template reads the sample."""
    samples = any(ref.namespace == "sample" for ref in template.refs)
    return "sample_parse_error" if samples else "invalid_variable_error"


def numeric(obj: Mapping[str, Any], path: str, b: Build) -> Compiled | None:
    b.check.keys(
        obj, path, (*_BASE, "input", "reference", "tolerance", "tolerance_type", "extract")
    )
    text, ref = b.template(obj, "input", path), b.template(obj, "reference", path)
    tolerance = b.check.number(obj, "tolerance", path, 0.0, minimum=0.0)
    mode = b.check.choice(obj, "tolerance_type", path, ("absolute", "relative"), "absolute")
    extract = b.check.choice(obj, "extract", path, ("whole", "first", "last"), "whole")
    if ref is not None and not ref.refs and number_in(ref.literal()) is None:
        b.check.error(f"{path}.reference", f"{ref.literal()!r} is not a number")
        return None
    if text is None or ref is None or tolerance is None or mode is None or extract is None:
        return None

    def node(r: Run) -> float:
        shown = text.render(r.values)
        value = number_in(shown, extract)
        if value is None:
            raise GraderError(_kind_for(text), f"input {shown[:80]!r} is not a number")
        target_text = ref.render(r.values)
        target = number_in(target_text)
        if target is None:
            raise GraderError(_kind_for(ref), f"reference {target_text[:80]!r} is not a number")
        allowed = tolerance * abs(target) if mode == "relative" else tolerance
        return float(abs(value - target) <= allowed)

    return Compiled(node)


def json_schema(obj: Mapping[str, Any], path: str, b: Build) -> Compiled | None:
    b.check.keys(obj, path, (*_BASE, "input", "schema"))
    text = b.template(obj, "input", path, "{{sample.output_text}}")
    schema = obj.get("schema")
    if not isinstance(schema, Mapping):
        b.check.error(f"{path}.schema", "is required: a JSON schema object")
        return None
    try:
        checker = structured.json_schema(dict(schema))
    except ConfigError as exc:
        b.check.error(f"{path}.schema", exc.message)
        return None
    if text is None:
        return None

    def node(r: Run) -> float:
        return checker.score(Sample(text.render(r.values)), r.values.item)

    return Compiled(node)


def sample_dict(sample: Sample) -> dict[str, Any]:
    """The `sample` a python grader gets, as in OpenAI (`output_json` None when not JSON)."""
    parsed = sample.output_json
    return {
        "output_text": sample.output_text,
        "output_json": None if parsed is NOT_JSON else parsed,
        "output_tools": [],
        "choices": [],
    }


def python(obj: Mapping[str, Any], path: str, b: Build) -> Compiled | None:
    b.check.keys(obj, path, (*_BASE, "source", "image_tag"))
    if not b.allow_python:
        b.check.error(
            f"{path}.type",
            "python graders are not allowed here: the operator has not enabled them "
            "(they run user code; enable with allow_python)",
        )
        return None
    source = b.check.string(obj, "source", path)
    b.check.string(obj, "image_tag", path, required=False)
    if source is None:
        return None
    details: dict[str, Any] = {"python_limits": vars(b.python_limits).copy()}
    if b.run_sandbox:
        problem, layers = check_source(source, b.python_limits)
        if problem:
            b.check.error(f"{path}.source", problem)
            return None
        details["isolation"] = layers
    limits = b.python_limits

    def node(r: Run) -> float:
        return run_source(source, sample_dict(r.values.sample), r.values.item_values, limits)

    return Compiled(node, bounded=False, details=details)


KINDS = {  # the leaf types; `multi` is objects.py's
    "string_check": string_check,
    "text_similarity": text_similarity,
    "score_model": score_model,
    "label_model": label_model,
    "python": python,
    "json_schema": json_schema,
    "numeric": numeric,
}
