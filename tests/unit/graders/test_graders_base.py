"""The grader type: a sample parses its JSON once, an item carries the row, grade == call."""

from __future__ import annotations

from tunesmith.graders import NOT_JSON, Grader, Item, Sample, parse_json


def test_sample_parses_json_lazily_and_tells_null_from_not_json() -> None:
    s = Sample(' {"a": [1, 2]} ')
    assert s.is_json and s.output_json == {"a": [1, 2]}
    assert s.output_json is s.output_json  # parsed once
    null = Sample("null")
    assert null.is_json and null.output_json is None
    prose = Sample("Sure! {}")
    assert not prose.is_json and prose.output_json is NOT_JSON
    assert parse_json("[1]") == [1] and parse_json("{") is NOT_JSON


def test_item_carries_reference_prompt_and_fields() -> None:
    item = Item('{"k": 1}', [{"role": "user", "content": "q"}], {"answer_key": "k"})
    assert item.reference_json == {"k": 1}
    assert item.prompt == ({"role": "user", "content": "q"},)
    assert item["answer_key"] == "k" and item.get("missing", 3) == 3
    assert Item("plain").reference_json is NOT_JSON


def test_grade_and_the_call_shorthand_agree() -> None:
    def right_key(sample: Sample, item: Item) -> float:
        out = sample.output_json
        return float(isinstance(out, dict) and item["answer_key"] in out)

    grader = Grader("right_key", right_key, description="has the key")
    item = Item("", (), {"answer_key": "k"})
    assert grader.grade(Sample('{"k": 0}'), item) == 1.0
    assert grader.grade(Sample("[]"), item) == 0.0
    assert grader.bounded and grader.higher_is_better is True
    same = Grader("same", lambda s, i: float(s.output_text == i.reference))
    assert same("a", "a") == same.grade(Sample("a"), Item("a")) == 1.0
