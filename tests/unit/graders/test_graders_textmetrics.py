"""The text_similarity metrics come from the libraries: identical, related, unrelated texts."""

from __future__ import annotations

import pytest

from tunesmith.graders.textmetrics import METRICS, UNAVAILABLE, meteor_synonyms, words

SAME = "the cat sat on the mat"
CLOSE = "the cat sat on the mat again"
OTHER = "quarterly revenue grew by four percent"
OPENAI_METRICS = ["fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3",
                  "rouge_4", "rouge_5", "rouge_l"]  # fmt: skip


def test_every_openai_metric_but_cosine_is_here() -> None:
    assert sorted(METRICS) == sorted(OPENAI_METRICS)
    assert "embedding model" in UNAVAILABLE["cosine"]


@pytest.mark.parametrize("metric", OPENAI_METRICS)
def test_identical_related_unrelated(metric: str) -> None:
    fn = METRICS[metric]
    same, close, other = fn(SAME, SAME), fn(CLOSE, SAME), fn(OTHER, SAME)
    assert same == pytest.approx(1.0, abs=5e-3)  # METEOR's fragmentation penalty: 0.998
    assert 0.0 <= other < close < same <= 1.0
    assert fn("", "") == 1.0


def test_values_are_the_libraries_own() -> None:
    import sacrebleu
    from rapidfuzz import fuzz, utils
    from rouge_score import rouge_scorer

    assert METRICS["fuzzy_match"]("Paris!", "paris") == 1.0  # case and punctuation ignored
    expected = fuzz.ratio(CLOSE, SAME, processor=utils.default_process) / 100
    assert METRICS["fuzzy_match"](CLOSE, SAME) == pytest.approx(expected)
    assert METRICS["bleu"](CLOSE, SAME) == pytest.approx(
        sacrebleu.sentence_bleu(CLOSE, [SAME]).score / 100
    )
    assert METRICS["bleu"]("Paris", "Paris") == pytest.approx(1.0)  # effective order
    scorer = rouge_scorer.RougeScorer(["rouge2"])
    assert METRICS["rouge_2"](CLOSE, SAME) == pytest.approx(
        scorer.score(SAME, CLOSE)["rouge2"].fmeasure
    )
    assert METRICS["rouge_5"]("a b c d", "a b c d e") == 0.0  # no 5-gram in the answer


def test_tokens_and_meteor_synonym_stage() -> None:
    assert words("Ça va? 5-7 days_left") == ["ça", "va", "5", "7", "days", "left"]
    assert meteor_synonyms() in ("wordnet", "none")
    assert METRICS["meteor"]("", "something") == 0.0
