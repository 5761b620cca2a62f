"""Structured-output graders: strict JSON, same value, partial credit, one key, the schema."""

from __future__ import annotations

import pytest
from grader_cases import REFS, score

from tunesmith.errors import ConfigError
from tunesmith.graders import build_grader, infer_schema


def test_json_valid_is_strict() -> None:
    assert score("json_valid", ' {"a": 1} ', "{}") == 1.0
    assert score("json_valid", 'Sure! {"a": 1}', "{}") == 0.0
    assert score("json_valid", '```json\n{"a": 1}\n```', "{}") == 0.0
    assert score("json_valid", "{'a': 1}", "{}") == 0.0
    assert score("json_valid", "null", "{}") == 1.0  # null is JSON


def test_json_match_ignores_key_order_not_values() -> None:
    ref = '{"a": 1, "b": null}'
    assert score("json_match", '{"b": null, "a": 1}', ref) == 1.0
    assert score("json_match", '{"a": 1, "b": "null"}', ref) == 0.0
    assert score("json_match", '{"a": 1}', ref) == 0.0
    assert score("json_match", "not json", ref) == 0.0
    assert score("json_match", "null", "not json either") == 0.0  # no reference value to match


def test_json_fields_gives_partial_credit() -> None:
    ref = '{"category": "billing", "priority": "high", "sentiment": "neutral", "order_id": null}'
    pred = '{"category": "billing", "priority": "low", "sentiment": "neutral", "order_id": "X"}'
    assert score("json_fields", pred, ref) == pytest.approx(0.5)
    assert score("json_fields", ref, ref) == 1.0
    assert score("json_fields", "[1, 2]", ref) == 0.0
    assert score("json_fields", "garbage", ref) == 0.0


def test_json_key_scores_one_field() -> None:
    ref = '{"category": "billing", "priority": "high"}'
    assert score("json_key:category", '{"category": "billing", "priority": "low"}', ref) == 1.0
    assert score("json_key:priority", '{"category": "billing", "priority": "low"}', ref) == 0.0
    assert score("json_key:category", '{"priority": "high"}', ref) == 0.0
    assert score("json_key:category", "billing", ref) == 0.0
    with pytest.raises(ConfigError, match="needs a key"):
        build_grader("json_key", [ref])


def test_infer_schema_from_reference_keys_types_and_small_value_sets() -> None:
    schema = infer_schema(REFS)
    assert schema is not None
    assert schema["required"] == ["category", "priority", "order_id"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["category"]["enum"] == ["billing", "refund"]
    assert sorted(schema["properties"]["order_id"]["type"]) == ["null", "string"]
    assert "enum" not in schema["properties"]["order_id"]  # ids are free text
    assert infer_schema(["plain text", "{}"]) is None


def test_json_schema_inferred_rejects_wrong_enum_extra_key_missing_key() -> None:
    grader = build_grader("json_schema", REFS)
    assert grader.details["schema_source"] == "inferred from the references"
    ok = '{"category": "refund", "priority": "low", "order_id": "ZZ9"}'
    assert grader(ok, REFS[0], []) == 1.0
    assert grader('{"category": "shipping", "priority": "low", "order_id": null}', "", []) == 0
    assert grader('{"category": "refund", "priority": "low"}', "", []) == 0.0
    extra = '{"category": "refund", "priority": "low", "order_id": null, "x": 1}'
    assert grader(extra, "", []) == 0.0
    assert grader("no json here", "", []) == 0.0


def test_json_schema_from_config_and_errors() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    grader = build_grader("json_schema", ["whatever"], schema=schema)
    assert grader('{"n": 3}', "", []) == 1.0
    assert grader('{"n": "3"}', "", []) == 0.0
    with pytest.raises(ConfigError, match="not all JSON"):
        build_grader("json_schema", ["plain text"])
    with pytest.raises(ConfigError, match="invalid JSON schema"):
        build_grader("json_schema", ["{}"], schema={"type": 12})
