"""run_grader answers in OpenAI's graders/run shape; the objects are the SDK's own shapes."""

from __future__ import annotations

from typing import Any

import pytest

from tunesmith.graders import ERROR_KINDS, GraderConfigError, build_grader_object, run_grader

CHECK = {"type": "string_check", "name": "exact", "operation": "eq",
         "input": "{{sample.output_json.answer}}", "reference": "{{item.sum}}"}  # fmt: skip
SIMILAR = {"type": "text_similarity", "name": "close", "evaluation_metric": "rouge_l",
           "input": "{{sample.output_text}}", "reference": "{{item.reference}}"}  # fmt: skip
MULTI = {"type": "multi", "name": "both", "graders": {"exact": CHECK, "close": SIMILAR},
         "calculate_output": "(exact + close) / 2"}  # fmt: skip
PYTHON = {"type": "python", "name": "code", "source": "def grade(sample, item):\n    return 1.0\n"}
SCORE = {"type": "score_model", "name": "judge", "model": "m", "range": [0, 1],
         "input": [{"role": "user", "content": "Rate {{sample.output_text}}"}]}  # fmt: skip


def sdk() -> Any:
    return pytest.importorskip("openai.types.fine_tuning.alpha")


SDK_MULTI = {"type": "multi", "name": "one", "graders": CHECK, "calculate_output": "exact"}


@pytest.mark.parametrize("obj", [CHECK, SIMILAR, PYTHON, SCORE, SDK_MULTI])
def test_our_objects_are_the_sdks_shapes(obj: dict[str, Any]) -> None:
    """(The SDK types a multi grader's `graders` as one grader; the API's guide and we take a
    map of names to graders too: MULTI above.)"""
    parsed = sdk().GraderValidateResponse.model_validate({"grader": obj}).grader
    assert parsed is not None and parsed.type == obj["type"]
    if obj is SDK_MULTI:
        assert run_grader(obj, '{"answer": 1}', {"sum": 1})["reward"] == 1.0


def test_a_pass_in_openai_shape() -> None:
    result = run_grader(CHECK, '{"answer": 7}', {"sum": 7})
    response = sdk().GraderRunResponse.model_validate(result)
    assert response.reward == 1.0 and response.sub_rewards == {}
    assert response.metadata.name == "exact" and response.metadata.type == "string_check"
    assert response.metadata.scores == {"exact": 1.0}
    assert not any(result["metadata"]["errors"][k] for k in ERROR_KINDS)
    assert response.metadata.execution_time >= 0


def test_multi_reports_sub_rewards_and_sample_errors() -> None:
    item = {"sum": 7, "reference": "the answer is 7"}
    result = run_grader(MULTI, "the answer is 7", item)
    response = sdk().GraderRunResponse.model_validate(result)
    assert response.sub_rewards == {"exact": 0.0, "close": 1.0}  # output not JSON: exact is 0
    assert response.reward == 0.5
    assert response.metadata.errors.sample_parse_error is True
    assert result["metadata"]["error_messages"] == [
        "exact: sample.output_json.answer: the model's output is not JSON"
    ]


def test_grading_failures_are_reward_zero_with_the_flag() -> None:
    result = run_grader(CHECK, '{"answer": 7}', {"total": 7})
    response = sdk().GraderRunResponse.model_validate(result)
    assert response.reward == 0.0 and response.metadata.errors.invalid_variable_error is True
    assert "the item has no field 'sum'" in result["metadata"]["error_messages"][0]
    grader = build_grader_object(CHECK)
    assert run_grader(grader, '{"answer": 7}', {"sum": 7})["reward"] == 1.0  # a built grader


def test_unusable_graders_and_items_raise() -> None:
    with pytest.raises(GraderConfigError, match=r"grader\.operation"):
        run_grader({**CHECK, "operation": "equals"}, "x", {})
    with pytest.raises(GraderConfigError, match=r"grader\.type: python graders are not allowed"):
        run_grader(PYTHON, "x", {})
    with pytest.raises(GraderConfigError, match="item: must be an object"):
        run_grader(CHECK, "x", ["not", "an", "object"])  # type: ignore[arg-type]
