"""String checks: is the answer the reference, does it contain it, match a pattern, name a label.

All comparisons go through one normalisation (SQuAD style: case, punctuation, English articles
and whitespace ignored), so "The Paris!" and "paris" are the same answer everywhere; a regex
sees the raw text, because a pattern is the user's own, exact, statement.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from tunesmith.errors import ConfigError
from tunesmith.graders.base import Grader, Item, Sample

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """Lower-case, drop punctuation and English articles, collapse whitespace (SQuAD style)."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(sample: Sample, item: Item) -> float:
    return float(normalize(sample.output_text) == normalize(item.reference))


def contains(sample: Sample, item: Item) -> float:
    """1 when the normalised reference occurs in the normalised answer, at word boundaries.

    An empty reference would be "contained" in anything; it only matches an empty answer."""
    ref, pred = normalize(item.reference), normalize(sample.output_text)
    if not ref:
        return float(not pred)
    return float(f" {ref} " in f" {pred} ")


def regex(pattern: str, name: str | None = None) -> Grader:
    """1 when the answer matches `pattern` (Python `re.search`)."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"bad regex metric pattern {pattern!r}: {exc}") from None

    def score(sample: Sample, _item: Item) -> float:
        return float(compiled.search(sample.output_text) is not None)

    return Grader(name or f"regex:{pattern}", score, description=f"matches /{pattern}/")


def extract_choice(prediction: str, labels: Sequence[str]) -> str | None:
    """The label an answer names: the whole answer if it is a label, else the label mentioned
    first (as whole words). Case and punctuation are ignored."""
    pred = normalize(prediction)
    normalised = {normalize(label): label for label in labels}
    if pred in normalised:
        return normalised[pred]
    best: tuple[int, str] | None = None
    padded = f" {pred} "
    for norm, label in normalised.items():
        if not norm:
            continue
        pos = padded.find(f" {norm} ")
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, label)
    return best[1] if best else None


def choice(labels: Sequence[str], name: str = "choice") -> Grader:
    """Label accuracy: the label the answer names equals the reference label."""
    labels = list(dict.fromkeys(labels))
    if not labels:
        raise ConfigError("the choice metric found no labels")

    def score(sample: Sample, item: Item) -> float:
        picked = extract_choice(sample.output_text, labels)
        return float(picked is not None and normalize(picked) == normalize(item.reference))

    return Grader(name, score, description="label accuracy", details={"labels": labels})
