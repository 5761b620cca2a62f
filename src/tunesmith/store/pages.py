"""What every list shares: OpenAI's cursor pages (`after` = the last id seen, `has_more`)
and the clock that stamps `created_at` (unix seconds)."""

from __future__ import annotations

import time
from typing import Any


def now() -> int:
    return int(time.time())


def clamp_limit(limit: int) -> int:
    """A page holds at least one item (the server checks the upper bound)."""
    return max(1, int(limit))


def page(rows: list[Any], limit: int) -> tuple[list[Any], bool]:
    """`rows` read with `limit + 1`: the page and whether more follow."""
    return rows[:limit], len(rows) > limit
