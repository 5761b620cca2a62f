"""Model graders: a local judge the caller allows, templated messages, the number parsed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tunesmith.graders import (
    GraderError,
    Item,
    JudgeSettings,
    LocalJudges,
    Sample,
    build_grader_object,
    run_grader,
    validate_grader,
)
from tunesmith.graders.judge import parse_score


class FakeJudges:
    """A judge that answers from a script and records what it was asked."""

    def __init__(self, *replies: str):
        self.replies = list(replies)
        self.asked: list[tuple[str, list[dict[str, str]], JudgeSettings]] = []

    def allows(self, model: str) -> bool:
        return model == "judge"

    def names(self) -> list[str]:
        return ["judge"]

    def complete(
        self, model: str, conversations: Sequence[list[dict[str, str]]], settings: JudgeSettings
    ) -> list[str]:
        self.asked.extend((model, list(c), settings) for c in conversations)
        return [self.replies.pop(0) for _ in conversations]


def score_model(**extra: Any) -> dict[str, Any]:
    obj = {
        "type": "score_model",
        "name": "judge_score",
        "model": "judge",
        "input": [
            {"role": "developer", "content": "Grade the answer from 0 to 1."},
            {"role": "user", "content": [
                {"type": "input_text", "text": "Question: {{item.question}}"},
                "Answer: {{sample.output_text}}",
            ]},
        ],
    }  # fmt: skip
    return {**obj, **extra}


def test_parse_score() -> None:
    assert parse_score('{"steps": [], "result": 0.8}') == 0.8
    assert parse_score('Reasoning... {"score": 1}') == 1.0
    assert parse_score("The answer 42 is right. Score: 0.9", 0, 1) == 0.9
    assert parse_score("7/10", 0, 10) == 7.0
    assert parse_score("It has 3 mistakes, so I give it 0.4") == 0.4  # the last number
    assert parse_score("Score: 11", 0, 10) == 10.0  # clamped into the range
    assert parse_score("-3") == 0.0
    with pytest.raises(GraderError, match="has no number") as err:
        parse_score("Looks good to me!")
    assert err.value.kind == "model_grader_parse_error"


def test_score_model_pass_and_fail_with_templated_messages() -> None:
    judges = FakeJudges("Score: 1", "0")
    grader = build_grader_object(score_model(), judges=judges)
    item = Item(fields={"question": "Capital of France?"})
    assert grader.grade(Sample("Paris"), item) == 1.0
    assert grader.grade(Sample("Berlin"), item) == 0.0
    model, messages, settings = judges.asked[0]
    assert model == "judge" and settings == JudgeSettings()  # greedy by default
    assert messages == [
        {"role": "system", "content": "Grade the answer from 0 to 1."},
        {"role": "user", "content": "Question: Capital of France?\nAnswer: Paris"},
    ]
    assert grader.bounded


def test_score_model_range_sampling_params_and_unreadable_answers() -> None:
    judges = FakeJudges("8 out of 10", "no idea")
    params = {"temperature": 0.7, "max_completions_tokens": 16, "seed": 3}
    obj = score_model(range=[0, 10], sampling_params=params)
    grader = build_grader_object(obj, judges=judges)
    assert grader.grade(Sample("x"), Item(fields={"question": "q"})) == 8.0
    assert judges.asked[0][2] == JudgeSettings(max_tokens=16, temperature=0.7, seed=3)
    assert grader.bounded is False and grader.details["range"] == [0.0, 10.0]
    result = run_grader(grader, "x", {"question": "q"})
    assert result["reward"] == 0.0
    assert result["metadata"]["errors"]["model_grader_parse_error"] is True


def test_score_model_malformed_and_unallowed_judges() -> None:
    judges = FakeJudges()
    assert validate_grader(score_model(), judges=judges) == []
    (none,) = validate_grader(score_model())
    assert none.startswith("grader.model: no judge models are allowed here")
    assert validate_grader(score_model(model="gpt-4o"), judges=judges) == [
        "grader.model: 'gpt-4o' is not an allowed judge model (allowed: judge)"
    ]
    image = [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]
    errors = validate_grader(
        score_model(range=[1, 0], input=image, sampling_params={"temperature": -1, "n": 2}),
        judges=judges,
    )
    assert "grader.range: must be two numbers [low, high], low < high (got [1, 0])" in errors
    assert any(
        e.startswith("grader.input[0].content[0].type: 'input_image' is not supported")
        for e in errors
    )
    assert any(e.startswith("grader.sampling_params.n: unknown field") for e in errors)
    assert "grader.sampling_params.temperature: must be at least 0 (got -1)" in errors
    bad_role = score_model(input=[{"role": "judge", "content": "hi {{item.x"}])
    assert sorted(validate_grader(bad_role, judges=judges)) == [
        "grader.input[0].content: '{{' without a closing '}}'",
        "grader.input[0].role: must be one of user, assistant, system, developer (got 'judge')",
    ]
    assert validate_grader(score_model(input=[]), judges=judges) == [
        "grader.input: must be a non-empty list of messages"
    ]


def label_model(**extra: Any) -> dict[str, Any]:
    obj = {
        "type": "label_model",
        "name": "tone",
        "model": "judge",
        "input": [{"role": "user", "content": "Label the tone of: {{sample.output_text}}"}],
        "labels": ["polite", "rude", "neutral"],
        "passing_labels": ["polite", "neutral"],
    }
    return {**obj, **extra}


def test_label_model_pass_fail_and_malformed() -> None:
    grader = build_grader_object(label_model(), judges=FakeJudges("Polite.", "It is rude", "??"))
    assert grader.grade(Sample("Thank you!"), Item()) == 1.0
    assert grader.grade(Sample("Go away"), Item()) == 0.0
    with pytest.raises(GraderError, match="named none of the labels"):
        grader.grade(Sample("..."), Item())
    errors = validate_grader(label_model(passing_labels=["happy"], labels=[]), judges=FakeJudges())
    assert errors == ["grader.labels: must be a non-empty list of labels"]
    errors = validate_grader(label_model(passing_labels=["happy"]), judges=FakeJudges())
    assert errors == ["grader.passing_labels: must be a non-empty subset of labels"]


def test_a_tiny_local_judge_runs_through_our_engine(tiny_model_dir: Path) -> None:
    judges = LocalJudges({"tiny": tiny_model_dir})
    assert judges.allows("tiny") and not judges.allows(str(tiny_model_dir))
    obj = score_model(model="tiny", range=[0, 10], sampling_params={"max_completions_tokens": 8})
    grader = build_grader_object(obj, judges=judges)
    item = Item(fields={"question": "What is the capital of France?"})
    try:
        value = grader.grade(Sample("Paris"), item)
    except GraderError as exc:  # an untrained judge may well say no number at all
        assert exc.kind == "model_grader_parse_error" and "has no number" in exc.message
    else:
        assert 0.0 <= value <= 10.0
    result = run_grader(grader, "Paris", {"question": "What is the capital of France?"})
    assert 0.0 <= result["reward"] <= 10.0
    assert result["metadata"]["errors"]["model_grader_server_error"] is False
