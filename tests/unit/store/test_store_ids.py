"""Ids have OpenAI's shapes and are random."""

from __future__ import annotations

import re

import pytest

from tunesmith.store.ids import new_id


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("file", r"file-[0-9a-f]{24}"),
        ("job", r"ftjob-[0-9a-f]{24}"),
        ("event", r"ftevent-[0-9a-f]{24}"),
        ("checkpoint", r"ftckpt_[0-9a-f]{24}"),
    ],
)
def test_ids_have_openai_shapes(kind: str, pattern: str) -> None:
    ids = {new_id(kind) for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(pattern, i) for i in ids)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown id kind"):
        new_id("model")
