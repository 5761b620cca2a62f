"""Text similarity for free-text answers, where exact match is too strict to move.

ROUGE-L (longest common subsequence of words) rewards an answer for saying the reference's
words in the reference's order without requiring every word; `length` is descriptive (answer
length in words, no better direction), reported beside it because a tuned model that learned to
be brief or verbose changes every similarity score.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tunesmith.graders.base import Item, Sample

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length, O(len(a)·len(b)) time, O(len(b)) memory."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(sample: Sample, item: Item) -> float:
    """ROUGE-L F1 over lower-cased word tokens."""
    pred, ref = words(sample.output_text), words(item.reference)
    if not pred or not ref:
        return float(not pred and not ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_length(sample: Sample, _item: Item) -> float:
    """Answer length in whitespace-separated words."""
    return float(len(sample.output_text.split()))
