"""Text similarity for free-text answers, where exact match is too strict to move.

ROUGE-L (longest common subsequence of words) rewards an answer for saying the reference's
words in the reference's order without requiring every word; `length` is descriptive (answer
length in words, no better direction), reported beside it because a tuned model that learned to
be brief or verbose changes every similarity score.

ROUGE-L is Google's rouge-score (the same one the `text_similarity` grader object uses, see
`textmetrics`), with a Unicode word tokeniser, so the metric matches the published ROUGE on
English text and still scores other languages.
"""

from __future__ import annotations

from tunesmith.graders.base import Item, Sample
from tunesmith.graders.textmetrics import rouge, words

__all__ = ["answer_length", "rouge_l", "words"]


def rouge_l(sample: Sample, item: Item) -> float:
    """ROUGE-L F1 over lower-cased word tokens (two empty texts score 1, one empty 0)."""
    return rouge("rougeL", sample.output_text, item.reference)


def answer_length(sample: Sample, _item: Item) -> float:
    """Answer length in whitespace-separated words."""
    return float(len(sample.output_text.split()))
