"""The one grader type: evaluation metrics and reinforcement-learning rewards are the same thing.

A grader looks at one model output (`Sample`) beside its reference row (`Item`) and returns one
number. Evaluation needs a number *per example* (the base-vs-tuned verdict is a paired
comparison, see `tunesmith.eval.stats`) and reinforcement learning needs a reward per sampled
completion: the same function serves both, so a metric a user trusts in the report is exactly
the reward a policy is trained on.

Bounded graders (the default) return a score in [0, 1] (reports show it as a percentage, RL
uses it as the reward as it is). Descriptive graders (`length`) and user code graders may
return any finite number; they say so with `bounded=False`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class _NotJson:
    """The value of text that is not (only) JSON: a sentinel, because `null` is valid JSON."""

    def __repr__(self) -> str:
        return "NOT_JSON"


NOT_JSON: Any = _NotJson()


def parse_json(text: str) -> Any:
    """The JSON value of the whole text, or `NOT_JSON` (strict: surrounding prose fails)."""
    try:
        return json.loads(text.strip())
    except (ValueError, TypeError):
        return NOT_JSON


class Sample:
    """One model output. `output_json` is parsed on first use and shared by every grader."""

    __slots__ = ("_json", "output_text")

    def __init__(self, output_text: str):
        self.output_text = output_text
        self._json: Any = None

    @property
    def output_json(self) -> Any:
        """The output's JSON value, or `NOT_JSON` when the output is not (only) JSON."""
        if self._json is None:
            self._json = (parse_json(self.output_text),)
        return self._json[0]

    @property
    def is_json(self) -> bool:
        return self.output_json is not NOT_JSON

    def __repr__(self) -> str:
        return f"Sample({self.output_text!r})"


class Item:
    """The reference row an output is graded against: the `reference` answer, the `prompt`
    messages that produced the output, and any other fields of the row (`item["key"]`)."""

    __slots__ = ("_json", "fields", "prompt", "reference")

    def __init__(
        self,
        reference: str = "",
        prompt: Sequence[Mapping[str, Any]] = (),
        fields: Mapping[str, Any] | None = None,
    ):
        self.reference = reference
        self.prompt = tuple(prompt)
        self.fields = dict(fields or {})
        self._json: Any = None

    @property
    def reference_json(self) -> Any:
        """The reference's JSON value, or `NOT_JSON`."""
        if self._json is None:
            self._json = (parse_json(self.reference),)
        return self._json[0]

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def __repr__(self) -> str:
        return f"Item({self.reference!r})"


Score = Callable[[Sample, Item], float]


@dataclass(frozen=True)
class Grader:
    """A named scorer. `higher_is_better` is None for descriptive graders (no winner);
    `bounded`: scores lie in [0, 1]; `details` travel into the report (e.g. the schema used)."""

    name: str
    score: Score
    higher_is_better: bool | None = True
    description: str = ""
    bounded: bool = True
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def grade(self, sample: Sample, item: Item) -> float:
        return self.score(sample, item)

    def __call__(
        self, output: str, reference: str, prompt: Sequence[Mapping[str, Any]] = ()
    ) -> float:
        """Shorthand for `grade(Sample(output), Item(reference, prompt))`."""
        return self.score(Sample(output), Item(reference, prompt))
