"""Shared cases for the grader tests: reference answers and a one-answer scorer."""

from __future__ import annotations

import json

from tunesmith.graders import build_grader

# Ticket-style JSON references: two small label sets and a free-text id.
REFS = [
    json.dumps({"category": c, "priority": p, "order_id": o})
    for c, p, o in [
        ("billing", "high", "A1"),
        ("refund", "low", None),
        ("billing", "low", "B2"),
        ("refund", "high", "C3"),
        ("billing", "high", None),
        ("refund", "low", "D4"),
    ]
]


def score(name: str, pred: str, ref: str, refs: list[str] | None = None, **kw) -> float:
    """The grader `name`, built for `refs` (default: just `ref`), on one answer."""
    return build_grader(name, refs or [ref], **kw)(pred, ref, [])
