"""The one test that loads the real embedded default model (run with `make test-all`)."""

from __future__ import annotations

import time

import pytest

from tunesmith import api
from tunesmith.models import DEFAULT_MODEL


@pytest.mark.slow
def test_default_model_knows_the_capital_of_france() -> None:
    api.pull_model(DEFAULT_MODEL)
    start = time.perf_counter()
    lm = api.load_model(DEFAULT_MODEL)
    load_seconds = time.perf_counter() - start
    answer = api.generate(lm, "What is the capital of France?", max_new_tokens=30)
    assert "Paris" in answer
    assert load_seconds < 5  # from the cache, not a fresh conversion
