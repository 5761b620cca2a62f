"""Grader objects in OpenAI's shapes (and our numeric / json_schema): pass, fail, malformed."""

from __future__ import annotations

from typing import Any

import pytest

from tunesmith.graders import (
    GraderConfigError,
    GraderError,
    Item,
    ObjectGrader,
    Sample,
    build_grader_object,
    validate_grader,
)


def grade(obj: dict[str, Any], output: str, item: dict[str, Any] | None = None) -> float:
    return build_grader_object(obj).grade(Sample(output), Item(fields=item or {}))


def string_check(operation: str, **extra: Any) -> dict[str, Any]:
    obj = {"type": "string_check", "name": "check", "operation": operation,
           "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}  # fmt: skip
    return {**obj, **extra}


# -- string_check ----------------------------------------------------------------------------------


def test_string_check_follows_openai_exactly() -> None:
    item = {"answer": "Paris"}
    assert grade(string_check("eq"), "Paris", item) == 1.0
    assert grade(string_check("eq"), "paris", item) == 0.0  # case-sensitive
    assert grade(string_check("eq"), "Paris ", item) == 0.0  # no trimming
    assert grade(string_check("ne"), "Lyon", item) == 1.0
    assert grade(string_check("ne"), "Paris", item) == 0.0
    assert grade(string_check("like"), "It is Paris.", item) == 1.0  # contains
    assert grade(string_check("like"), "It is paris.", item) == 0.0
    assert grade(string_check("ilike"), "IT IS PARIS.", item) == 1.0
    assert grade(string_check("ilike"), "It is Lyon.", item) == 0.0
    assert grade(string_check("like"), "100% sure", {"answer": "%"}) == 1.0  # not a pattern


def test_string_check_on_json_output_scores_non_json_zero() -> None:
    obj = string_check("eq", input="{{sample.output_json.answer}}", reference="{{item.sum}}")
    assert grade(obj, '{"answer": 7}', {"sum": 7}) == 1.0
    assert grade(obj, '{"answer": 8}', {"sum": 7}) == 0.0
    assert grade(obj, "The answer is 7", {"sum": 7}) == 0.0  # not JSON: the model's fault
    assert grade(obj, '{"result": 7}', {"sum": 7}) == 0.0  # lacks the key: likewise
    with pytest.raises(GraderError) as err:  # the item lacks the field: the data's fault
        grade(obj, '{"answer": 7}', {"total": 7})
    assert err.value.kind == "invalid_variable_error" and err.value.grader == "check"


def test_string_check_malformed_names_every_field() -> None:
    errors = validate_grader(
        {"type": "string_check", "operation": "contains", "input": 3, "refrence": "x"}
    )
    assert sorted(errors) == [
        "grader.input: must be a string (a template such as {{sample.output_text}})",
        "grader.name: is required",
        "grader.operation: must be one of eq, ne, like, ilike (got 'contains')",
        "grader.reference: is required",
        "grader.refrence: unknown field (allowed: input, name, operation, reference, type)",
    ]
    with pytest.raises(GraderConfigError) as err:
        build_grader_object(string_check("similar"))
    assert err.value.errors == [
        "grader.operation: must be one of eq, ne, like, ilike (got 'similar')"
    ]
    assert err.value.param == "grader.operation" and err.value.code == "invalid_grader"
    assert validate_grader("string_check") == ["grader: must be an object (got str)"]
    assert validate_grader({"type": "regex", "name": "r"})[0].startswith(
        "grader.type: must be one of"
    )


# -- text_similarity -------------------------------------------------------------------------------


def similarity(metric: str) -> dict[str, Any]:
    return {"type": "text_similarity", "name": "sim", "evaluation_metric": metric,
            "input": "{{sample.output_text}}", "reference": "{{item.reference}}"}  # fmt: skip


@pytest.mark.parametrize("metric", ["fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_l"])
def test_text_similarity_pass_and_fail(metric: str) -> None:
    ref = {"reference": "the refund arrives in five business days"}
    good = grade(similarity(metric), "the refund arrives in five business days", ref)
    bad = grade(similarity(metric), "I like turtles", ref)
    assert good > 0.95 and bad < 0.3


def test_text_similarity_malformed_and_cosine_refused() -> None:
    assert validate_grader(similarity("jaccard")) == [
        "grader.evaluation_metric: must be one of fuzzy_match, bleu, gleu, meteor, rouge_1, "
        "rouge_2, rouge_3, rouge_4, rouge_5, rouge_l (got 'jaccard')"
    ]
    (cosine,) = validate_grader(similarity("cosine"))
    assert cosine.startswith("grader.evaluation_metric: cosine is not available here")
    assert validate_grader({**similarity("bleu"), "pass_threshold": "high"}) == [
        "grader.pass_threshold: must be a number (got 'high')"
    ]
    assert validate_grader({**similarity("bleu"), "pass_threshold": 0.5}) == []  # evals' field
    meteor = build_grader_object(similarity("meteor"))
    assert meteor.details["meteor_synonyms"] in ("wordnet", "none") and meteor.bounded


# -- numeric ---------------------------------------------------------------------------------------


def numeric(**extra: Any) -> dict[str, Any]:
    return {"type": "numeric", "name": "num", "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}", **extra}  # fmt: skip


def test_numeric_tolerances_and_extraction() -> None:
    assert grade(numeric(), "42", {"answer": 42}) == 1.0
    assert grade(numeric(), " 1,234.0 ", {"answer": "1234"}) == 1.0
    assert grade(numeric(), "43", {"answer": 42}) == 0.0
    assert grade(numeric(tolerance=1), "43", {"answer": 42}) == 1.0
    assert grade(numeric(tolerance=0.5), "43", {"answer": 42}) == 0.0
    rel = numeric(tolerance=0.01, tolerance_type="relative")
    assert grade(rel, "1009", {"answer": 1000}) == 1.0
    assert grade(rel, "1011", {"answer": 1000}) == 0.0
    assert grade(numeric(), "The answer is 42.", {"answer": 42}) == 0.0  # whole text by default
    assert grade(numeric(extract="last"), "6 * 7 = 42.", {"answer": 42}) == 1.0
    assert grade(numeric(extract="first"), "6 * 7 = 42.", {"answer": 42}) == 0.0
    assert grade(numeric(), "forty-two", {"answer": 42}) == 0.0  # the sample's fault: 0
    with pytest.raises(GraderError, match="not a number") as err:
        grade(numeric(), "42", {"answer": "n/a"})
    assert err.value.kind == "invalid_variable_error"


def test_numeric_malformed() -> None:
    errors = validate_grader(numeric(tolerance=-1, tolerance_type="percent", reference="abc"))
    assert "grader.tolerance: must be at least 0 (got -1)" in errors
    assert "grader.tolerance_type: must be one of absolute, relative (got 'percent')" in errors
    assert "grader.reference: 'abc' is not a number" in errors
    assert validate_grader(numeric(reference="42")) == []


# -- json_schema -----------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


def test_json_schema_object() -> None:
    obj = {"type": "json_schema", "name": "shape", "schema": SCHEMA}
    assert grade(obj, '{"answer": 3}') == 1.0
    assert grade(obj, '{"answer": "3"}') == 0.0
    assert grade(obj, "answer: 3") == 0.0
    nested = {**obj, "input": "{{sample.output_json.result}}"}
    assert grade(nested, '{"result": {"answer": 1}}') == 1.0


def test_json_schema_malformed() -> None:
    assert validate_grader({"type": "json_schema", "name": "s"}) == [
        "grader.schema: is required: a JSON schema object"
    ]
    (bad,) = validate_grader({"type": "json_schema", "name": "s", "schema": {"type": 12}})
    assert bad.startswith("grader.schema: invalid JSON schema")


# -- multi -----------------------------------------------------------------------------------------


def multi(formula: str, **graders: dict[str, Any]) -> dict[str, Any]:
    graders = graders or {
        "exact": string_check("eq"),
        "close": {**similarity("fuzzy_match"), "reference": "{{item.answer}}"},
    }
    return {"type": "multi", "name": "combined", "graders": graders, "calculate_output": formula}


def test_multi_combines_named_graders() -> None:
    grader = build_grader_object(multi("0.5 * exact + 0.5 * close"))
    assert grader.grade(Sample("Paris"), Item(fields={"answer": "Paris"})) == 1.0
    assert grader.grade(Sample("Lyon"), Item(fields={"answer": "Paris"})) < 0.5
    score, run = grader.run(Sample("paris"), Item(fields={"answer": "Paris"}))
    assert run.sub_rewards == {"exact": 0.0, "close": 1.0} and score == 0.5
    assert grader.bounded is False and isinstance(grader, ObjectGrader)
    assert grade(multi("max(exact, close) ^ 2"), "Paris", {"answer": "Paris"}) == 1.0


def test_multi_accepts_the_sdks_single_grader_shape() -> None:
    obj = {"type": "multi", "name": "m", "graders": string_check("eq"), "calculate_output": "check"}
    assert grade(obj, "x", {"answer": "x"}) == 1.0


def test_multi_malformed_formula_names_and_nesting() -> None:
    assert validate_grader(multi("exact + typo")) == [
        "grader.calculate_output: unknown name 'typo' (the graders are: close, exact)"
    ]
    assert validate_grader(multi("exact +")) == [
        "grader.calculate_output: the formula ends too early"
    ]
    nested = multi("inner", inner=multi("exact"))
    assert validate_grader(nested) == [
        "grader.graders.inner.type: a multi grader cannot contain another multi grader"
    ]
    bad_sub = multi("a", a=string_check("equals"))
    assert validate_grader(bad_sub) == [
        "grader.graders.a.operation: must be one of eq, ne, like, ilike (got 'equals')"
    ]
    (bad_name,) = validate_grader(multi("1", **{"my grader": string_check("eq")}))
    assert bad_name.startswith("grader.graders.my grader: a sub-grader's name must be usable")
    assert validate_grader({"type": "multi", "name": "m", "graders": {}, "calculate_output": "1"})
    errors = validate_grader({"type": "multi", "name": "m", "graders": {"a": string_check("eq")}})
    assert errors[0].startswith("grader.calculate_output: is required")


def test_grader_objects_serve_evaluation_like_any_grader() -> None:
    grader = build_grader_object(string_check("ilike", reference="{{item.reference}}"))
    assert grader("The capital is PARIS", "paris", []) == 1.0  # the Grader call shorthand
    assert grader.details["type"] == "string_check" and grader.details["grader"]["name"] == "check"
    assert grader.name == "check" and grader.higher_is_better is True
