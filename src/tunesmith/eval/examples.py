"""Held-out examples for evaluation: a prompt (messages) and the reference answer.

Any format the data layer reads is accepted: a conversation's last assistant message is the
reference, everything before it is the prompt. We read through `tunesmith.data` when it offers
`read_records`, and otherwise through a small reader for the two chat JSONL shapes (OpenAI
`messages`, ShareGPT `conversations`) so evaluation never depends on more than it must.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import DataError, where

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
}


@dataclass(frozen=True)
class EvalExample:
    prompt: tuple[dict[str, str], ...]
    reference: str
    source: str = ""

    @property
    def conversation(self) -> list[dict[str, str]]:
        """Prompt plus reference answer (what held-out loss is computed on)."""
        return [*self.prompt, {"role": "assistant", "content": self.reference}]

    @property
    def user_text(self) -> str:
        users = [m["content"] for m in self.prompt if m["role"] == "user"]
        return users[-1] if users else ""


def _messages_from_row(row: Any, path: Path, line: int) -> list[dict[str, str]]:
    if isinstance(row, dict) and isinstance(row.get("messages"), list):
        out = []
        for m in row["messages"]:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                raise DataError(
                    "message needs a role of system/user/assistant",
                    where=where(path, line, "messages"),
                )
            out.append({"role": m["role"], "content": str(m.get("content") or "")})
        return out
    if isinstance(row, dict) and isinstance(row.get("conversations"), list):
        out = []
        for m in row["conversations"]:
            role = (
                SHAREGPT_ROLES.get(str(m.get("from", "")).lower()) if isinstance(m, dict) else None
            )
            if role is None:
                raise DataError(
                    "ShareGPT turn needs 'from' of human/gpt/system",
                    where=where(path, line, "conversations"),
                )
            out.append({"role": role, "content": str(m.get("value") or "")})
        return out
    if isinstance(row, dict) and "prompt" in row and "completion" in row:
        return [
            {"role": "user", "content": str(row["prompt"])},
            {"role": "assistant", "content": str(row["completion"])},
        ]
    if isinstance(row, dict) and "instruction" in row and "output" in row:
        text = str(row["instruction"])
        if row.get("input"):
            text += "\n\n" + str(row["input"])
        return [
            {"role": "user", "content": text},
            {"role": "assistant", "content": str(row["output"])},
        ]
    if isinstance(row, dict) and "input" in row and "output" in row:
        return [
            {"role": "user", "content": str(row["input"])},
            {"role": "assistant", "content": str(row["output"])},
        ]
    raise DataError(
        "unrecognised record: expected messages, conversations, prompt/completion, "
        "instruction/output or input/output",
        where=where(path, line),
    )


def _fallback_read(path: Path) -> Iterable[tuple[list[dict[str, str]], str]]:
    with path.open(encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON: {exc.msg}", where=where(path, number)) from None
            yield _messages_from_row(row, path, number), f"{path}:{number}"


def _read_via_data_layer(path: Path) -> Iterable[tuple[list[dict[str, str]], str]] | None:
    try:
        from tunesmith.data.prepare import read_records  # type: ignore[attr-defined]
    except ImportError:
        return None

    def gen() -> Iterable[tuple[list[dict[str, str]], str]]:
        for record in read_records(path):
            messages = getattr(record, "messages", None)
            if messages is None:
                continue  # preference pairs carry no single reference answer
            yield (
                [{"role": m.role, "content": m.content} for m in messages],
                str(record.source or path),
            )

    return gen()


def read_conversations(path: str | Path) -> list[tuple[list[dict[str, str]], str]]:
    """All conversations in a file as (messages, "file:line")."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"held-out file {path} does not exist",
            hint="pass --data with a JSONL file of chat examples",
        )
    # The data layer reads every supported format (JSONL, JSON, CSV, Parquet; chat, Alpaca,
    # prompt/completion, ShareGPT ...); the small reader is only a fallback for chat JSONL.
    rows = _read_via_data_layer(path)
    if rows is None and path.suffix.lower() in (".jsonl", ".json"):
        rows = _fallback_read(path)
    if rows is None:
        raise DataError(
            f"cannot read {path.suffix} files",
            where=str(path),
            hint='use chat JSONL (one {"messages": [...]} per line)',
        )
    return list(rows)


def load_examples(path: str | Path, limit: int | None = None) -> list[EvalExample]:
    """Held-out examples from `path`; every conversation must end with an assistant answer."""
    examples = []
    for messages, source in read_conversations(path):
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise DataError(
                "a held-out example must end with the assistant's reference answer", where=source
            )
        examples.append(EvalExample(tuple(messages[:-1]), messages[-1]["content"], source))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise DataError(f"no examples in {path}")
    return examples
