"""The canonical data model: every input format becomes one of these records, early.

Nothing downstream of the converters knows which file format the user wrote. Every record keeps
the file and 1-based line (or row) it came from so any later error can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Source:
    """Where a record came from: file path and 1-based line (JSONL/JSON/CSV) or row (Parquet)."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    # 1 = trained (the default for assistant turns), 0 = context only. Ignored for non-assistant.
    weight: int | None = None
    name: str | None = None

    @property
    def trained(self) -> bool:
        return self.role == "assistant" and self.weight != 0


@dataclass(frozen=True)
class Conversation:
    """A chat example. `completion_only` marks prompt/completion-style data (train the answer)."""

    messages: tuple[Message, ...]
    source: Source | None = None
    completion_only: bool = False
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class PreferencePair:
    """A DPO-style example: a shared prompt and a preferred / non-preferred assistant answer."""

    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    source: Source | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Prompt:
    """A reinforcement fine-tuning example: the conversation so far, ending with the user's turn
    (the model writes the answer a grader scores), and the row's other fields (`item`), which
    the grader's templates read as `{{item.field}}` (OpenAI's reinforcement data shape)."""

    messages: tuple[Message, ...]
    item: dict = field(default_factory=dict, compare=False, hash=False)
    source: Source | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)


Record = Conversation | PreferencePair | Prompt
