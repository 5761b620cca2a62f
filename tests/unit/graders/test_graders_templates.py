"""Templates: item and sample references render; unknown ones fail at parse time, named."""

from __future__ import annotations

import pytest

from tunesmith.graders import GraderError, Item, Sample
from tunesmith.graders.templates import Values, item_values, parse_template


def render(text: str, output: str = "", item: Item | None = None) -> str:
    template, errors = parse_template(text, "grader.input")
    assert not errors, errors
    assert template is not None
    return template.render(Values(Sample(output), item or Item()))


def test_item_and_sample_references_render() -> None:
    item = Item("Paris", [{"role": "user", "content": "capital?"}], {"n": 7, "tags": ["a", "b"]})
    assert render("{{item.reference}} / {{ item.n }}", item=item) == "Paris / 7"
    assert render("{{item.tags[1]}}{{item.tags.0}}", item=item) == "ba"
    assert render("{{item.messages[0].content}}", item=item) == "capital?"
    assert render("{{item.tags}}", item=item) == '["a", "b"]'  # non-strings as JSON
    assert render("said: {{sample.output_text}}", "hi") == "said: hi"
    out = '{"answer": {"value": 3, "ok": true}, "list": [1, 2]}'
    assert render("{{sample.output_json.answer.value}}", out) == "3"
    assert (
        render("{{sample.output_json.answer.ok}}|{{sample.output_json.list[1]}}", out) == "true|2"
    )
    assert render("no references at all") == "no references at all"


def test_item_values_prefer_the_rows_own_fields() -> None:
    values = item_values(Item("ref", [{"role": "user", "content": "q"}], {"reference": "mine"}))
    assert values["reference"] == "mine" and values["messages"] == [
        {"role": "user", "content": "q"}
    ]
    assert "reference" not in item_values(Item(fields={"x": 1}))


def test_missing_values_fail_with_the_kind_of_fault() -> None:
    with pytest.raises(GraderError) as not_json:
        render("{{sample.output_json.answer}}", "plain words")
    assert not_json.value.kind == "sample_parse_error"
    with pytest.raises(GraderError, match="no field 'answer'") as missing:
        render("{{sample.output_json.answer}}", '{"other": 1}')
    assert missing.value.kind == "sample_parse_error"
    with pytest.raises(GraderError, match="the item has no field 'gold'") as no_field:
        render("{{item.gold}}", item=Item(fields={"sum": 1}))
    assert no_field.value.kind == "invalid_variable_error"
    with pytest.raises(GraderError, match="has 2 items"):
        render("{{item.tags[5]}}", item=Item(fields={"tags": [1, 2]}))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{foo.x}}", "unknown namespace 'foo'"),
        ("{{sample.outptu_text}}", "unknown sample field"),
        ("{{sample.output_tools}}", "not produced here"),
        ("{{sample.output_text.x}}", "has no fields"),
        ("{{sample}}", "unknown sample field"),
        ("{{ item.a b }}", "is not a reference"),
        ("{{item.x", "without a closing"),
    ],
)
def test_bad_references_are_errors_naming_the_field(text: str, message: str) -> None:
    template, errors = parse_template(text, "grader.reference")
    assert template is None
    assert len(errors) == 1 and errors[0].startswith("grader.reference: ")
    assert message in errors[0]


def test_item_references_checked_against_an_example_row() -> None:
    _, errors = parse_template("{{item.answer}}", "grader.reference", {"sum": 3})
    assert errors == ["grader.reference: item.answer: the item has no field 'answer' (it has: sum)"]
    assert parse_template("{{item.sum}}", "grader.reference", {"sum": 3})[1] == []
    assert parse_template(3, "grader.input")[1] == [
        "grader.input: must be a string (a template such as {{sample.output_text}})"
    ]
