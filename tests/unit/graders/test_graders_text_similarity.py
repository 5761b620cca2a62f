"""Text similarity: ROUGE-L known values and the descriptive length grader."""

from __future__ import annotations

import pytest
from grader_cases import score

from tunesmith.graders import build_grader
from tunesmith.graders.text_similarity import lcs_length


def test_rouge_l_known_values() -> None:
    assert score("rouge_l", "the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert score("rouge_l", "dog barks", "the cat sat") == 0.0
    assert score("rouge_l", "", "the cat") == 0.0
    # LCS("the cat was on the mat", "the cat sat on the mat") = 5 of 6 words each way.
    assert score("rouge_l", "the cat was on the mat", "the cat sat on the mat") == pytest.approx(
        5 / 6
    )
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4


def test_length_counts_words_and_has_no_direction() -> None:
    grader = build_grader("length", ["x"])
    assert grader("one two  three", "x", []) == 3.0
    assert grader("", "x", []) == 0.0
    assert grader.higher_is_better is None
    assert grader.bounded is False
