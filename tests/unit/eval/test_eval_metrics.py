"""Every metric: what scores 1, what must score 0, and the edge cases in between."""

from __future__ import annotations

import json
import textwrap

import pytest

from tunesmith.errors import ConfigError
from tunesmith.eval import metrics as M


def score(name: str, pred: str, ref: str, refs: list[str] | None = None, **kw) -> float:
    return M.build_metric(name, refs or [ref], **kw)(pred, ref, [])


def test_exact_match_normalises_case_punctuation_articles_whitespace() -> None:
    assert score("exact_match", "  The Paris!  ", "paris") == 1.0
    assert score("exact_match", "Paris, France", "paris") == 0.0
    assert score("exact_match", "", "paris") == 0.0


def test_contains_needs_whole_words() -> None:
    assert score("contains", "The answer is Paris, of course.", "paris") == 1.0
    assert score("contains", "Parisian cafes", "paris") == 0.0
    assert score("contains", "London", "paris") == 0.0
    assert score("contains", "anything", "") == 0.0  # empty reference is not in everything
    assert score("contains", "", "") == 1.0


def test_regex_searches_and_rejects_bad_patterns() -> None:
    assert score(r"regex:^\d{3}-\d{4}$", "555-1234", "x") == 1.0
    assert score(r"regex:^\d{3}-\d{4}$", "call 555-1234", "x") == 0.0
    with pytest.raises(ConfigError, match="bad regex"):
        M.build_metric("regex:([", ["x"])
    with pytest.raises(ConfigError, match="needs a pattern"):
        M.build_metric("regex", ["x"])


def test_json_valid_is_strict() -> None:
    assert score("json_valid", ' {"a": 1} ', "{}") == 1.0
    assert score("json_valid", 'Sure! {"a": 1}', "{}") == 0.0
    assert score("json_valid", '```json\n{"a": 1}\n```', "{}") == 0.0
    assert score("json_valid", "{'a': 1}", "{}") == 0.0


def test_json_match_ignores_key_order_not_values() -> None:
    ref = '{"a": 1, "b": null}'
    assert score("json_match", '{"b": null, "a": 1}', ref) == 1.0
    assert score("json_match", '{"a": 1, "b": "null"}', ref) == 0.0
    assert score("json_match", '{"a": 1}', ref) == 0.0
    assert score("json_match", "not json", ref) == 0.0


def test_json_fields_gives_partial_credit() -> None:
    ref = '{"category": "billing", "priority": "high", "sentiment": "neutral", "order_id": null}'
    pred = '{"category": "billing", "priority": "low", "sentiment": "neutral", "order_id": "X"}'
    assert score("json_fields", pred, ref) == pytest.approx(0.5)
    assert score("json_fields", ref, ref) == 1.0
    assert score("json_fields", "[1, 2]", ref) == 0.0
    assert score("json_fields", "garbage", ref) == 0.0


REFS = [
    json.dumps({"category": c, "priority": p, "order_id": o})
    for c, p, o in [
        ("billing", "high", "A1"),
        ("refund", "low", None),
        ("billing", "low", "B2"),
        ("refund", "high", "C3"),
        ("billing", "high", None),
        ("refund", "low", "D4"),
    ]
]


def test_infer_schema_from_reference_keys_types_and_small_value_sets() -> None:
    schema = M.infer_schema(REFS)
    assert schema is not None
    assert schema["required"] == ["category", "priority", "order_id"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["category"]["enum"] == ["billing", "refund"]
    assert sorted(schema["properties"]["order_id"]["type"]) == ["null", "string"]
    assert "enum" not in schema["properties"]["order_id"]  # ids are free text
    assert M.infer_schema(["plain text", "{}"]) is None


def test_json_schema_inferred_rejects_wrong_enum_extra_key_missing_key() -> None:
    metric = M.build_metric("json_schema", REFS)
    assert metric.details["schema_source"] == "inferred from the references"
    ok = '{"category": "refund", "priority": "low", "order_id": "ZZ9"}'
    assert metric(ok, REFS[0], []) == 1.0
    assert metric('{"category": "shipping", "priority": "low", "order_id": null}', "", []) == 0
    assert metric('{"category": "refund", "priority": "low"}', "", []) == 0.0
    extra = '{"category": "refund", "priority": "low", "order_id": null, "x": 1}'
    assert metric(extra, "", []) == 0.0
    assert metric("no json here", "", []) == 0.0


def test_json_schema_from_config_and_errors() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    metric = M.build_metric("json_schema", ["whatever"], schema=schema)
    assert metric('{"n": 3}', "", []) == 1.0
    assert metric('{"n": "3"}', "", []) == 0.0
    with pytest.raises(ConfigError, match="not all JSON"):
        M.build_metric("json_schema", ["plain text"])
    with pytest.raises(ConfigError, match="invalid JSON schema"):
        M.build_metric("json_schema", ["{}"], schema={"type": 12})


def test_choice_extracts_the_named_label() -> None:
    refs = ["positive", "negative", "neutral"]
    assert score("choice", "Positive.", "positive", refs) == 1.0
    assert score("choice", "The sentiment is negative here", "negative", refs) == 1.0
    assert score("choice", "negative", "positive", refs) == 0.0
    assert score("choice", "I cannot tell", "positive", refs) == 0.0
    # The label mentioned first wins.
    assert score("choice", "neutral, maybe positive", "positive", refs) == 0.0
    assert score("choice:yes|no", "Yes", "yes") == 1.0


def test_rouge_l_known_values() -> None:
    assert score("rouge_l", "the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert score("rouge_l", "dog barks", "the cat sat") == 0.0
    assert score("rouge_l", "", "the cat") == 0.0
    # LCS("the cat was on the mat", "the cat sat on the mat") = 5 of 6 words each way.
    assert score("rouge_l", "the cat was on the mat", "the cat sat on the mat") == pytest.approx(
        5 / 6
    )
    assert M.lcs_length(list("ABCBDAB"), list("BDCABA")) == 4


def test_length_counts_words_and_has_no_direction() -> None:
    metric = M.build_metric("length", ["x"])
    assert metric("one two  three", "x", []) == 3.0
    assert metric("", "x", []) == 0.0
    assert metric.higher_is_better is None


def test_user_grader_module_and_file(tmp_path, monkeypatch) -> None:
    (tmp_path / "mygrader.py").write_text(
        textwrap.dedent(
            """
            def starts_same(prediction, reference):
                return prediction[:1] == reference[:1]

            def uses_prompt(prediction, reference, prompt):
                return len(prompt)

            def bad(prediction, reference):
                return "nope"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    metric = M.build_metric("mygrader:starts_same", ["x"])
    assert metric("abc", "axe", []) == 1.0
    assert metric("xbc", "axe", []) == 0.0
    by_file = M.build_metric(f"{tmp_path / 'mygrader.py'}:uses_prompt", ["x"])
    assert by_file("a", "b", [{"role": "user", "content": "q"}]) == 1.0
    with pytest.raises(ConfigError, match="bool or a number"):
        M.build_metric("mygrader:bad", ["x"])("a", "b", [])
    with pytest.raises(ConfigError, match="has no function"):
        M.build_metric("mygrader:missing", ["x"])
    with pytest.raises(ConfigError, match="could not import"):
        M.build_metric("no_such_module_xyz:f", ["x"])


def test_unknown_and_duplicate_metrics_are_user_errors() -> None:
    with pytest.raises(ConfigError, match="unknown metric"):
        M.build_metric("accuracy", ["x"])
    with pytest.raises(ConfigError, match="twice"):
        M.build_metrics(["exact_match", "exact_match"], ["x"])


def test_default_metrics_follow_the_references() -> None:
    assert M.default_metric_names(REFS)[0] == "json_match"
    labels = ["yes", "no", "yes", "no", "yes", "no", "no"]
    assert M.default_metric_names(labels)[0] == "choice"
    prose = ["The capital of France is Paris.", "Water boils at 100 degrees Celsius."]
    assert M.default_metric_names(prose)[0] == "rouge_l"


def test_json_key_scores_one_field() -> None:
    ref = '{"category": "billing", "priority": "high"}'
    assert score("json_key:category", '{"category": "billing", "priority": "low"}', ref) == 1.0
    assert score("json_key:priority", '{"category": "billing", "priority": "low"}', ref) == 0.0
    assert score("json_key:category", '{"priority": "high"}', ref) == 0.0
    assert score("json_key:category", "billing", ref) == 0.0
    assert M.default_metric_names([ref])[-2:] == ["json_key:category", "json_key:priority"]
    with pytest.raises(ConfigError, match="needs a key"):
        M.build_metric("json_key", [ref])
