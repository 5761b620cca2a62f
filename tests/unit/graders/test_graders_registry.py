"""Grader specs: unknown and duplicate names are user errors; defaults follow the references."""

from __future__ import annotations

import pytest
from grader_cases import REFS

from tunesmith.errors import ConfigError
from tunesmith.graders import BUILTIN, build_grader, build_graders, default_grader_names


def test_unknown_and_duplicate_metrics_are_user_errors() -> None:
    with pytest.raises(ConfigError, match="unknown metric"):
        build_grader("accuracy", ["x"])
    with pytest.raises(ConfigError, match="twice"):
        build_graders(["exact_match", "exact_match"], ["x"])


def test_default_metrics_follow_the_references() -> None:
    assert default_grader_names(REFS)[0] == "json_match"
    labels = ["yes", "no", "yes", "no", "yes", "no", "no"]
    assert default_grader_names(labels)[0] == "choice"
    prose = ["The capital of France is Paris.", "Water boils at 100 degrees Celsius."]
    assert default_grader_names(prose)[0] == "rouge_l"
    ref = '{"category": "billing", "priority": "high"}'
    assert default_grader_names([ref])[-2:] == ["json_key:category", "json_key:priority"]


def test_every_builtin_builds_and_grades_in_bounds() -> None:
    specs = {"regex": "regex:^x", "json_key": "json_key:category"}
    for name in BUILTIN:
        grader = build_grader(specs.get(name, name), REFS)
        value = grader('{"category": "billing", "priority": "high", "order_id": "A1"}', REFS[0])
        if grader.bounded:
            assert 0.0 <= value <= 1.0, name
    assert [g.name for g in build_graders(None, REFS)] == default_grader_names(REFS)
