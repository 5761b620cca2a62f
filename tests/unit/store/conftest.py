"""Fixtures of the store tests: every test that takes `store` runs once on SQLite and once on
PostgreSQL (the `store_url` fixture in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tunesmith.store import Store


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    try:
        yield s
    finally:
        s.close()
