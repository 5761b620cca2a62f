"""Preview: show examples rendered through the model's chat template, marking the trained tokens.

Why: "loss masking silently wrong" is the field's classic failure, and it is invisible in loss
curves. A preview shows the exact text the model sees — default system prompts the template
injects, end-of-turn markers, newlines — and which of it carries loss. The rendering is cut into
runs of trained / untrained tokens and each run is decoded as a whole (decoding single byte-level
tokens would break multi-byte characters). `show_tokens=True` keeps one run per token instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from tunesmith.data.formats import normalize_format
from tunesmith.data.prepare import read_records
from tunesmith.data.readers import check_file
from tunesmith.data.records import Conversation, Message, PreferencePair, Source
from tunesmith.data.tokenize import (
    IGNORE_INDEX,
    TokenizedExample,
    check_train_on,
    tokenize_conversation,
)
from tunesmith.errors import ConfigError, DataError


@dataclass
class PreviewExample:
    source: Source | None
    spans: list[tuple[str, bool]]  # (decoded text, trained), in order
    n_tokens: int
    n_trained: int
    kind: str = "sft"  # "sft", or "chosen"/"rejected" for the halves of a preference pair

    @property
    def text(self) -> str:
        return "".join(t for t, _ in self.spans)

    @property
    def trained_text(self) -> str:
        return "".join(t for t, trained in self.spans if trained)

    def marked(self, start: str = "⟦", end: str = "⟧") -> str:
        """Plain text with trained runs wrapped in markers (for logs and non-colour terminals)."""
        return "".join(f"{start}{t}{end}" if trained else t for t, trained in self.spans)


def spans(example: TokenizedExample, tokenizer: Any, show_tokens: bool = False):
    """(text, trained) runs of a tokenized example."""
    out: list[tuple[str, bool]] = []
    run: list[int] = []
    flag: bool | None = None
    for tok, lab in zip(example.input_ids, example.labels, strict=True):
        trained = lab != IGNORE_INDEX
        if run and (trained != flag or show_tokens):
            out.append((tokenizer.decode(run), bool(flag)))
            run = []
        run.append(tok)
        flag = trained
    if run:
        out.append((tokenizer.decode(run), bool(flag)))
    return out


def preview_example(
    example: TokenizedExample, tokenizer: Any, *, kind: str = "sft", show_tokens: bool = False
) -> PreviewExample:
    return PreviewExample(
        example.source,
        spans(example, tokenizer, show_tokens),
        len(example.input_ids),
        example.n_trained,
        kind,
    )


def _examples(records: Iterator[Any], tokenizer: Any, train_on: str, show_tokens: bool):
    for rec in records:
        if isinstance(rec, PreferencePair):
            for kind, answer in (("chosen", rec.chosen), ("rejected", rec.rejected)):
                conv = Conversation((*rec.prompt, Message("assistant", answer)), rec.source)
                ex = tokenize_conversation(conv, tokenizer)
                yield preview_example(ex, tokenizer, kind=kind, show_tokens=show_tokens)
        else:
            ex = tokenize_conversation(rec, tokenizer, train_on=train_on)
            yield preview_example(ex, tokenizer, show_tokens=show_tokens)


def check_preview_options(path: Path, n: int, format: str | None, train_on: str) -> None:
    """Fail fast (before a tokenizer is loaded) on a bad count, format, train_on or file."""
    if isinstance(n, bool) or n < 1:
        raise ConfigError(f"the number of examples (--n) must be at least 1, got {n}")
    normalize_format(format)
    check_train_on(train_on)
    check_file(Path(path))


def preview_file(
    path: Path,
    tokenizer: Any,
    *,
    n: int = 3,
    format: str | None = None,
    train_on: str = "assistant",
    show_tokens: bool = False,
) -> list[PreviewExample]:
    """The first `n` records of `path` as previews (a preference pair gives two)."""
    check_preview_options(path, n, format, train_on)
    records = islice(read_records(Path(path), format), n)
    out = list(_examples(records, tokenizer, train_on, show_tokens))
    if not out:
        raise DataError("the file holds no examples", where=str(path))
    return out
