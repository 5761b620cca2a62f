"""One completion with what a serving API reports: the text, token counts and why it stopped.

`TextStream` follows one reply token by token: it turns tokens into text incrementally, ends
the reply at an end-of-turn token, at the first stop string or at max_tokens, and says which
text is ready to send. Text that could still become a stop string is held back until it
cannot, so a stop string never leaks out half-sent across piece borders. Streaming and
non-streaming replies go through this same class, so a reply streamed piece by piece is the
same text as the reply returned whole.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop string) | "length" (max tokens)


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in `text`, -1 when there is none."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else -1


class TextStream:
    """The reply to one request as it grows. `add(token)` returns the text ready to send.

    Detokenisation is incremental in the way vLLM and TGI do it: each step decodes only the last
    few tokens (`_prefix:` against `_prefix:_read`), which keeps word-initial spaces of
    SentencePiece vocabularies right and costs the same at token 500 as at token 5. A token that
    ends inside a multi-byte character decodes to U+FFFD; its text waits for the next token.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        prompt_tokens: int,
        max_tokens: int,
        stops: Sequence[str] = (),
        stop_ids: Collection[int] = (),
    ):
        self.tokenizer = tokenizer
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max(1, max_tokens)
        self.stops = [s for s in stops if s]
        self.stop_ids = set(stop_ids)
        self.tokens: list[int] = []
        self.text = ""  # everything decoded so far (may run past a stop string)
        self.sent = 0  # characters of `text` handed out
        self.finish_reason: str | None = None
        self._prefix = 0
        self._read = 0
        self._hold = max((len(s) for s in self.stops), default=1) - 1

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def _decode(self, tokens: list[int]) -> str:
        return str(
            self.tokenizer.decode(
                tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        )

    def add(self, token: int) -> str:
        """Take the next generated token; returns the text that became ready ("" if none)."""
        if self.done:
            return ""
        if token in self.stop_ids:
            self.finish_reason = "stop"
            return self._flush()
        self.tokens.append(token)
        before = self._decode(self.tokens[self._prefix : self._read])
        after = self._decode(self.tokens[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.tokens)
        cut = first_stop(self.text, self.stops)
        if cut >= 0:
            self.text = self.text[:cut]
            self.finish_reason = "stop"
            return self._flush()
        if len(self.tokens) >= self.max_tokens:
            self.finish_reason = "length"
            return self._flush()
        ready = max(self.sent, len(self.text) - self._hold)
        piece, self.sent = self.text[self.sent : ready], ready
        return piece

    def _flush(self) -> str:
        piece, self.sent = self.text[self.sent :], len(self.text)
        return piece

    def result(self) -> Completion:
        """The finished reply (its text is everything `add` handed out, in one piece)."""
        reason = self.finish_reason or "stop"
        return Completion(self.text[: self.sent], self.prompt_tokens, len(self.tokens), reason)
