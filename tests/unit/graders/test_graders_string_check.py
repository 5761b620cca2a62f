"""String checks: exact match, contains, regex, choice — what scores 1, what must score 0."""

from __future__ import annotations

import pytest
from grader_cases import score

from tunesmith.errors import ConfigError
from tunesmith.graders import build_grader
from tunesmith.graders.string_check import extract_choice, normalize


def test_exact_match_normalises_case_punctuation_articles_whitespace() -> None:
    assert score("exact_match", "  The Paris!  ", "paris") == 1.0
    assert score("exact_match", "Paris, France", "paris") == 0.0
    assert score("exact_match", "", "paris") == 0.0
    assert normalize("  The  Quick, brown fox! ") == "quick brown fox"


def test_contains_needs_whole_words() -> None:
    assert score("contains", "The answer is Paris, of course.", "paris") == 1.0
    assert score("contains", "Parisian cafes", "paris") == 0.0
    assert score("contains", "London", "paris") == 0.0
    assert score("contains", "anything", "") == 0.0  # empty reference is not in everything
    assert score("contains", "", "") == 1.0


def test_regex_searches_and_rejects_bad_patterns() -> None:
    assert score(r"regex:^\d{3}-\d{4}$", "555-1234", "x") == 1.0
    assert score(r"regex:^\d{3}-\d{4}$", "call 555-1234", "x") == 0.0
    assert build_grader(r"regex:^\d+$", ["x"]).name == r"regex:^\d+$"
    with pytest.raises(ConfigError, match="bad regex"):
        build_grader("regex:([", ["x"])
    with pytest.raises(ConfigError, match="needs a pattern"):
        build_grader("regex", ["x"])


def test_choice_extracts_the_named_label() -> None:
    refs = ["positive", "negative", "neutral"]
    assert score("choice", "Positive.", "positive", refs) == 1.0
    assert score("choice", "The sentiment is negative here", "negative", refs) == 1.0
    assert score("choice", "negative", "positive", refs) == 0.0
    assert score("choice", "I cannot tell", "positive", refs) == 0.0
    # The label mentioned first wins.
    assert score("choice", "neutral, maybe positive", "positive", refs) == 0.0
    assert score("choice:yes|no", "Yes", "yes") == 1.0
    assert extract_choice("I think NEGATIVE.", refs) == "negative"
    assert build_grader("choice", refs).details["labels"] == sorted(refs)
