"""Structured output: is the answer JSON, the right JSON, JSON of the right shape.

Fine-tuning for a strict output format is the most common reason to fine-tune at all, so these
graders are strict: the *whole* answer must parse (prose around it or a code fence fails, since
a program reading the answer would fail too). `json_fields` and `json_key` give partial credit,
which says *what* improved; `json_schema` checks the shape against the user's schema or, when
there is none, one inferred from the reference answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.errors import ConfigError
from tunesmith.graders.base import NOT_JSON, Grader, Item, Sample, parse_json


def json_valid(sample: Sample, _item: Item) -> float:
    return float(sample.is_json)


def json_match(sample: Sample, item: Item) -> float:
    """The answer parses to the same JSON value as the reference (key order free)."""
    return float(sample.is_json and sample.output_json == item.reference_json)


def json_fields(sample: Sample, item: Item) -> float:
    """Share of the reference object's keys whose value the answer reproduces exactly.

    Non-object references fall back to whole-value equality."""
    ref, pred = item.reference_json, sample.output_json
    if not isinstance(ref, dict):
        return float(pred is not NOT_JSON and pred == ref)
    if not ref:
        return float(pred == {})
    if not isinstance(pred, dict):
        return 0.0
    hits = sum(1 for k, v in ref.items() if k in pred and pred[k] == v)
    return hits / len(ref)


def json_key(key: str) -> Grader:
    """1 when the answer is a JSON object whose `key` equals the reference's `key`."""

    def score(sample: Sample, item: Item) -> float:
        pred, ref = sample.output_json, item.reference_json
        if not isinstance(pred, dict) or not isinstance(ref, dict) or key not in pred:
            return 0.0
        return float(pred[key] == ref.get(key))

    return Grader(f"json_key:{key}", score, description=f"field {key!r} right")


_JSON_TYPES: list[tuple[type, str]] = [
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
    (type(None), "null"),
]


def _json_type(value: Any) -> str:
    for py, name in _JSON_TYPES:
        if isinstance(value, py):
            return name
    return "string"


def infer_schema(references: Sequence[str], max_enum: int = 12) -> dict[str, Any] | None:
    """A JSON schema describing the reference answers, or None when they are not all JSON.

    Objects: keys present in every reference are required, no other keys are allowed, each
    property gets the union of the types seen; a string property whose values come from a small
    set (at most `max_enum` values, each seen about 3+ times on average) becomes an enum, so a
    made-up category fails the schema while free text such as ids does not."""
    values = [parse_json(r) for r in references]
    if not values or any(v is NOT_JSON for v in values):
        return None
    if not all(isinstance(v, dict) for v in values):
        types = sorted({_json_type(v) for v in values})
        return {"type": types[0] if len(types) == 1 else types}
    keys: list[str] = []
    for v in values:
        keys += [k for k in v if k not in keys]
    properties: dict[str, Any] = {}
    for key in keys:
        seen = [v[key] for v in values if key in v]
        types = sorted({_json_type(x) for x in seen})
        if "integer" in types and "number" in types:
            types.remove("integer")
        prop: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
        strings = sorted({x for x in seen if isinstance(x, str)})
        if strings and len(strings) <= max_enum and len(seen) >= 3 * len(strings):
            prop["enum"] = strings + ([None] if "null" in types else [])
        properties[key] = prop
    required = [k for k in keys if all(k in v for v in values)]
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def json_schema(schema: dict[str, Any], source: str = "given") -> Grader:
    """1 when the answer is JSON that conforms to `schema` (checked once, here)."""
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError(
            "the json_schema metric needs the jsonschema package", hint="pip install jsonschema"
        ) from None
    try:
        validator_cls = jsonschema.validators.validator_for(schema)
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"invalid JSON schema for json_schema metric: {exc.message}") from None
    validator = validator_cls(schema)

    def score(sample: Sample, _item: Item) -> float:
        return float(sample.is_json and validator.is_valid(sample.output_json))

    return Grader(
        "json_schema",
        score,
        description=f"conforms to the JSON schema ({source})",
        details={"schema": schema, "schema_source": source},
    )
