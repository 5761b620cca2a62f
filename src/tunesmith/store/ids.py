"""Public ids for stored objects, in OpenAI's shapes (`file-…`, `ftjob-…`, `ftevent-…`,
`ftckpt_…`).

They are random (96 bits from `secrets`), not sequential: an id says nothing about how many
objects exist or who owns them, and a guessed id from another project is as good as none.
Order is kept by the store's own sequence columns, never by the id.
"""

from __future__ import annotations

import secrets

PREFIXES = {"file": "file-", "job": "ftjob-", "event": "ftevent-", "checkpoint": "ftckpt_"}


def new_id(kind: str) -> str:
    """A fresh id for `kind` ("file", "job", "event" or "checkpoint")."""
    try:
        prefix = PREFIXES[kind]
    except KeyError:
        raise ValueError(f"unknown id kind {kind!r} (known: {', '.join(PREFIXES)})") from None
    return prefix + secrets.token_hex(12)
