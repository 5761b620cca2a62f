"""Forgetting check: the warning fires above the threshold and only then; reference sources."""

from __future__ import annotations

import json
import math

import pytest

from tunesmith.errors import DataError
from tunesmith.eval import forgetting as F
from tunesmith.eval.loss import ExampleLoss


def losses(mean_nll: float, n: int = 20, tokens: int = 10) -> list[ExampleLoss]:
    # Slight spread so the bootstrap has something to resample.
    return [ExampleLoss((mean_nll + 0.01 * (i % 3)) * tokens, tokens) for i in range(n)]


def test_warning_above_threshold() -> None:
    r = F.forgetting_from_losses(losses(1.0), losses(1.2), source="test")
    assert r.relative_change == pytest.approx(math.exp(0.2) - 1, rel=1e-3)  # ~ +22 %
    assert r.warning
    assert "WARNING" in r.message and "+22" in r.message
    assert r.ci[0] <= r.relative_change <= r.ci[1]


def test_no_warning_below_threshold_or_with_a_higher_threshold() -> None:
    small = F.forgetting_from_losses(losses(1.0), losses(1.05), source="test")
    assert small.relative_change == pytest.approx(math.exp(0.05) - 1, rel=1e-3)  # ~ +5 %
    assert not small.warning
    lenient = F.forgetting_from_losses(losses(1.0), losses(1.2), source="t", threshold=0.5)
    assert not lenient.warning
    better = F.forgetting_from_losses(losses(1.0), losses(0.8), source="t")
    assert better.relative_change < 0 and not better.warning


def test_bundled_reference_set_is_general_and_well_formed() -> None:
    label, convs = F.load_reference(None)
    assert label.startswith("bundled")
    assert 40 <= len(convs) <= 64
    assert all(c[-1]["role"] == "assistant" and c[-1]["content"] for c in convs)
    questions = {c[0]["content"] for c in convs}
    assert len(questions) == len(convs)  # no duplicates


def test_user_reference_file(tmp_path) -> None:
    path = tmp_path / "ref.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(5)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    label, convs = F.load_reference(path)
    assert len(convs) == 5 and str(path) in label
    with pytest.raises(DataError):
        F.load_reference(tmp_path / "missing.jsonl")


def test_sharegpt_streaming_reader_and_missing_package(tmp_path, monkeypatch) -> None:
    dump = tmp_path / "sharegpt.json"
    items = [
        {
            "id": "1",
            "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
        },
        {
            "id": "2",
            "conversations": [
                {"from": "gpt", "value": "starts wrong"},
                {"from": "human", "value": "x"},
            ],
        },
        {
            "id": "3",
            "conversations": [
                {"from": "human", "value": "long " * 2000},
                {"from": "gpt", "value": "y"},
            ],
        },
        {
            "id": "4",
            "conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}],
        },
    ]
    dump.write_text(json.dumps(items, indent=1))
    assert [x["id"] for x in F.iter_json_array(dump, chunk_size=7)] == ["1", "2", "3", "4"]
    convs = F.sharegpt_conversations(dump, limit=10)
    assert [c[0]["content"] for c in convs] == ["hi", "2+2?"]
    monkeypatch.setattr(F, "_sharegpt_file", lambda: dump)
    label, got = F.load_reference("sharegpt", limit=1)
    assert label.startswith("sharegpt") and len(got) == 1
    monkeypatch.undo()
    monkeypatch.setattr(F, "SHAREGPT_PACKAGE", "surely-not-installed-package-xyz")
    with pytest.raises(DataError, match="not installed"):
        F.load_reference("sharegpt")
