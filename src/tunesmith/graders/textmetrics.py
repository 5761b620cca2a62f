"""The `evaluation_metric`s of OpenAI's text_similarity grader, each from a well-kept library.

Similarity scores are compared across runs and papers, so none is hand-written here:

- `fuzzy_match`: rapidfuzz (the library OpenAI names), `fuzz.ratio` (normalised Indel
  similarity) after rapidfuzz's default preprocessing (case and punctuation ignored). Not
  `WRatio`: its partial matching gives an unrelated answer about half marks, a poor reward;
- `bleu`: sacrebleu's sentence BLEU (13a tokenisation, exponential smoothing, effective
  order, so a one-word answer can score), scaled to 0..1;
- `gleu`: nltk's sentence GLEU (Google BLEU);
- `meteor`: nltk's METEOR; its synonym stage uses WordNet when nltk's WordNet data is
  installed (`python -m nltk.downloader wordnet`), else it matches exact words and stems only
  (`meteor_synonyms()` says which, and the grader's details record it);
- `rouge_1` … `rouge_5`, `rouge_l`: Google's rouge-score, F-measure. Its default tokeniser
  keeps only ASCII letters and digits, which scores any non-English answer 0; ours keeps every
  Unicode letter and digit and is identical to it on ASCII text.

`cosine` needs an embedding model (OpenAI uses its hosted text-embedding-3-large); there is
none offline, so it is refused with the reason (`UNAVAILABLE`).

All metrics return a float in [0, 1]; two empty texts are identical (1.0).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

UNAVAILABLE = {
    "cosine": (
        "cosine similarity needs an embedding model, and none is available offline; use "
        "fuzzy_match, bleu, gleu, meteor or rouge_*, or a score_model grader with a local judge"
    ),
}


class _Tokenizer:
    """rouge-score's tokeniser contract (`tokenize(text) -> list[str]`), Unicode-aware."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())


def words(text: str) -> list[str]:
    """Lower-cased Unicode word tokens (letters and digits), as ROUGE sees them."""
    return _Tokenizer().tokenize(text)


@lru_cache(maxsize=8)
def _rouge(kind: str) -> Any:
    from rouge_score import rouge_scorer  # type: ignore[import-untyped]

    return rouge_scorer.RougeScorer([kind], use_stemmer=False, tokenizer=_Tokenizer())


def rouge(kind: str, output: str, reference: str) -> float:
    """ROUGE F-measure; `kind` is rouge-score's name (`rouge1` … `rouge5`, `rougeL`)."""
    if not words(output) and not words(reference):
        return 1.0
    return float(_rouge(kind).score(reference, output)[kind].fmeasure)


def fuzzy_match(output: str, reference: str) -> float:
    from rapidfuzz import fuzz, utils

    if not output.strip() and not reference.strip():
        return 1.0
    return float(fuzz.ratio(output, reference, processor=utils.default_process)) / 100.0


def bleu(output: str, reference: str) -> float:
    import sacrebleu

    if not output.strip() and not reference.strip():
        return 1.0
    return min(1.0, float(sacrebleu.sentence_bleu(output, [reference]).score) / 100.0)


@lru_cache(maxsize=1)
def _nltk_tokenize() -> Callable[[str], list[str]]:
    from nltk.tokenize import TreebankWordTokenizer  # type: ignore[import-untyped]

    return TreebankWordTokenizer().tokenize


def gleu(output: str, reference: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu  # type: ignore[import-untyped]

    hyp, ref = _nltk_tokenize()(output), _nltk_tokenize()(reference)
    if not hyp and not ref:
        return 1.0
    return float(sentence_gleu([ref], hyp))


class _NoSynonyms:
    """A WordNet stand-in with no synonyms: METEOR's exact and stem stages only."""

    def synsets(self, *_args: Any, **_kwargs: Any) -> list[Any]:
        return []


@lru_cache(maxsize=1)
def _wordnet() -> Any:
    import nltk  # type: ignore[import-untyped]

    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            nltk.data.find("corpora/wordnet.zip")
        except LookupError:
            return _NoSynonyms()
    from nltk.corpus import wordnet  # type: ignore[import-untyped]

    return wordnet


def meteor_synonyms() -> str:
    """ "wordnet" when METEOR's synonym stage has WordNet, else "none"."""
    return "none" if isinstance(_wordnet(), _NoSynonyms) else "wordnet"


def meteor(output: str, reference: str) -> float:
    from nltk.translate.meteor_score import single_meteor_score  # type: ignore[import-untyped]

    hyp, ref = _nltk_tokenize()(output), _nltk_tokenize()(reference)
    if not hyp and not ref:
        return 1.0
    if not hyp or not ref:
        return 0.0
    return float(single_meteor_score(ref, hyp, wordnet=_wordnet()))


METRICS: dict[str, Callable[[str, str], float]] = {
    "fuzzy_match": fuzzy_match,
    "bleu": bleu,
    "gleu": gleu,
    "meteor": meteor,
    **{f"rouge_{n}": partial(rouge, f"rouge{n}") for n in range(1, 6)},
    "rouge_l": partial(rouge, "rougeL"),
}
