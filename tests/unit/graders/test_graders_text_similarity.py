"""Text similarity: ROUGE-L known values (Google's rouge-score) and the length grader."""

from __future__ import annotations

import pytest
from grader_cases import score

from tunesmith.graders import build_grader


def test_rouge_l_known_values() -> None:
    assert score("rouge_l", "the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert score("rouge_l", "dog barks", "the cat sat") == 0.0
    assert score("rouge_l", "", "the cat") == 0.0
    # LCS("the cat was on the mat", "the cat sat on the mat") = 5 of 6 words each way.
    assert score("rouge_l", "the cat was on the mat", "the cat sat on the mat") == pytest.approx(
        5 / 6
    )
    assert score("rouge_l", "", "") == 1.0


def test_rouge_l_agrees_with_rouge_score_and_also_scores_non_ascii() -> None:
    from rouge_score import rouge_scorer

    library = rouge_scorer.RougeScorer(["rougeL"])  # its own default tokeniser
    pairs = [
        ("The quick brown fox jumps over the lazy dog.", "A quick brown dog jumps over a fox!"),
        ("Refunds take 5-7 business days.", "Your refund arrives in 5 to 7 business days"),
        ("yes", "no"),
    ]
    for pred, ref in pairs:
        expected = library.score(ref, pred)["rougeL"].fmeasure
        assert score("rouge_l", pred, ref) == pytest.approx(expected)
    assert library.score("Привет мир", "Привет мир")["rougeL"].fmeasure == 0  # ASCII only
    assert score("rouge_l", "Привет мир", "Привет мир") == 1.0


def test_length_counts_words_and_has_no_direction() -> None:
    grader = build_grader("length", ["x"])
    assert grader("one two  three", "x", []) == 3.0
    assert grader("", "x", []) == 0.0
    assert grader.higher_is_better is None
    assert grader.bounded is False
