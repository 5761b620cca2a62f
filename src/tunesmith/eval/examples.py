"""Held-out examples for evaluation: a prompt (messages) and the reference answer.

There is one reader, the data layer's (`tunesmith.data.read_records`): every format training
accepts (chat, Alpaca, prompt/completion, input/output, ShareGPT, preference pairs; JSONL,
JSON, CSV, Parquet) is a held-out format too, with the same line-numbered errors. A
conversation's last assistant message is the reference and everything before it the prompt; a
preference pair's prompt is the prompt and its preferred answer the reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data.formats import message_dicts
from tunesmith.data.records import Conversation, Message, PreferencePair, Source
from tunesmith.errors import DataError


@dataclass(frozen=True)
class EvalExample:
    prompt: tuple[dict[str, Any], ...]
    reference: str
    source: str = ""
    origin: Source | None = field(default=None, compare=False)  # file and line, for errors

    @property
    def conversation(self) -> list[dict[str, Any]]:
        """Prompt plus reference answer (what held-out loss is computed on)."""
        return [*self.prompt, {"role": "assistant", "content": self.reference}]

    def record(self) -> Conversation:
        """The conversation as a canonical record, for the data layer's tokenizer."""
        return Conversation(tuple(to_message(m) for m in self.conversation), self.origin)

    @property
    def user_text(self) -> str:
        users = [m["content"] for m in self.prompt if m["role"] == "user"]
        return users[-1] if users else ""


def to_message(m: dict[str, Any]) -> Message:
    return Message(m["role"], m["content"], name=m.get("name"))


def iter_conversations(path: str | Path) -> Iterator[tuple[list[dict[str, Any]], Source | None]]:
    """Each conversation in a file as (messages, where it came from), read lazily; a preference
    pair counts as its prompt followed by the preferred answer."""
    from tunesmith.data import read_records

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"held-out file {path} does not exist",
            hint="pass --data with a JSONL file of chat examples",
        )
    for record in read_records(path):
        if isinstance(record, PreferencePair):
            messages = [*record.prompt, Message("assistant", record.chosen)]
        else:
            messages = list(record.messages)
        yield message_dicts(messages), record.source


def read_conversations(path: str | Path) -> list[tuple[list[dict[str, Any]], str]]:
    """All conversations in a file as (messages, "file:line")."""
    return [(m, str(src or path)) for m, src in iter_conversations(path)]


def load_examples(path: str | Path, limit: int | None = None) -> list[EvalExample]:
    """Held-out examples from `path`; every conversation must end with an assistant answer."""
    examples = []
    for messages, origin in iter_conversations(path):
        source = str(origin or path)
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise DataError(
                "a held-out example must end with the assistant's reference answer", where=source
            )
        examples.append(EvalExample(tuple(messages[:-1]), messages[-1]["content"], source, origin))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise DataError(f"no examples in {path}")
    return examples
