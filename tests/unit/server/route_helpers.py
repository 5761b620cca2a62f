"""Helpers of the server route tests: two projects with their own keys, the tiny model offered
as `tiny`, uploads, and the checked OpenAI error envelope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
GOOD_ROW = {
    "messages": [
        {"role": "user", "content": "Classify: my parcel is late"},
        {"role": "assistant", "content": "delivery"},
    ]
}


def chat_rows(n: int, start: int = 0) -> bytes:
    """`n` distinct chat rows (JSONL); another `start` gives rows none of these repeat."""
    rows = []
    for i in range(start, start + n):
        row = json.loads(json.dumps(GOOD_ROW))
        row["messages"][0]["content"] += f" (order {i})"
        rows.append(json.dumps(row))
    return ("\n".join(rows) + "\n").encode()


def make_server_settings(home: Path, tiny: Path, **extra: Any) -> Any:
    from tunesmith.service import ServerSettings

    return ServerSettings(
        home=home,
        api_keys="proj-a:key-a,proj-b:key-b",
        models={"tiny": str(tiny)},
        job_defaults={"data": {"max_seq_len": 128}},
        **extra,
    )


def upload(client: Any, content: bytes, name: str = "train.jsonl", headers=A) -> dict[str, Any]:
    r = client.post(
        "/v1/files",
        headers=headers,
        data={"purpose": "fine-tune"},
        files={"file": (name, content, "application/jsonl")},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def error_of(response: Any, status: int) -> dict[str, Any]:
    """The OpenAI error envelope of a 4xx, checked."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert response.headers.get("x-should-retry") == "false"
    return dict(body["error"])
