"""Local judge models for `score_model` and `label_model` graders, through our own engine.

OpenAI's model graders call a hosted model by name. Here the judge is a local model, and the
name comes from a request body, so it is never loaded as given: the caller passes the judges
it allows (`LocalJudges({"judge": "qwen2.5-1.5b-instruct"})`, an operator's list, or any
object with `allows`/`complete`), and a grader naming another model is refused when it is
built. A judge is loaded on first use with `tunesmith.models.load.load_model` and answers with
`tunesmith.inference.generate` (the chat template, stop tokens and batching every other
generation uses), greedy unless the grader's `sampling_params` say otherwise.

The judge's answer is parsed for a number (`parse_score`): OpenAI's structured `{"result": x}`
first, then a labelled `score: x` (`7/10` and `7 out of 10` count as 7), else the last number;
no number is a `model_grader_parse_error`, and a number outside the grader's range is clamped
into it (a judge saying 11 on a 0..10 scale gave the top score, not a broken reward).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tunesmith.events import Reporter
from tunesmith.graders.failures import GraderError

Messages = list[dict[str, str]]

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_FRACTION = re.compile(rf"({_NUMBER})\s*(?:/|\bout of\b)\s*{_NUMBER}", re.IGNORECASE)
_LABELLED = re.compile(rf"\b(?:score|result|rating|grade)\b\W{{0,3}}\s*({_NUMBER})", re.IGNORECASE)
_ANY_NUMBER = re.compile(_NUMBER)
_JSON_OBJECT = re.compile(r"\{[^{}]*\}")


@dataclass(frozen=True)
class JudgeSettings:
    """How a judge samples (the grader's `sampling_params`); greedy by default."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0


class JudgeSource(Protocol):
    """The judges a caller allows: `allows(name)` is asked when a grader is built, `complete`
    when it grades (one reply per conversation, in order)."""

    def allows(self, model: str) -> bool: ...

    def names(self) -> list[str]: ...

    def complete(
        self, model: str, conversations: Sequence[Messages], settings: JudgeSettings
    ) -> list[str]: ...


class LocalJudges:
    """Judge models by the name a grader's `model` gives: `{name: model name, path, or an
    already loaded model (anything with .model and .tokenizer)}`, or a list of model names
    allowed as they are. Loaded once, on first use, by `loader` (default `load_model`)."""

    def __init__(
        self,
        models: Mapping[str, str | Path | Any] | Iterable[str],
        *,
        device: str | None = None,
        dtype: str | None = None,
        loader: Callable[[str | Path], Any] | None = None,
        on_event: Reporter | None = None,
    ):
        self._targets: dict[str, Any] = (
            dict(models) if isinstance(models, Mapping) else {m: m for m in models}
        )
        self._device, self._dtype, self._on_event = device, dtype, on_event
        self._loader = loader
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    def allows(self, model: str) -> bool:
        return model in self._targets

    def names(self) -> list[str]:
        return sorted(self._targets)

    def _load(self, model: str) -> Any:
        if model not in self._loaded:
            target = self._targets[model]
            if hasattr(target, "model") and hasattr(target, "tokenizer"):
                self._loaded[model] = target
            elif self._loader is not None:
                self._loaded[model] = self._loader(target)
            else:
                from tunesmith.models.load import load_model

                self._loaded[model] = load_model(
                    target, device=self._device, dtype=self._dtype, on_event=self._on_event
                )
        return self._loaded[model]

    def complete(
        self, model: str, conversations: Sequence[Messages], settings: JudgeSettings
    ) -> list[str]:
        if not self.allows(model):
            raise GraderError("model_grader_server_error", f"judge model {model!r} is not allowed")
        from tunesmith.inference.engine import GenerationSettings, generate

        generation = GenerationSettings(
            max_new_tokens=settings.max_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            seed=settings.seed,
        )
        with self._lock:
            try:
                loaded = self._load(model)
                return generate(loaded.model, loaded.tokenizer, conversations, generation)
            except GraderError:
                raise
            except Exception as exc:  # a judge that cannot answer is this sample's error
                raise GraderError(
                    "model_grader_server_error", f"judge model {model!r} failed: {exc}"
                ) from None


def _json_result(text: str) -> float | None:
    candidates = [text.strip(), *_JSON_OBJECT.findall(text)]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            for key in ("result", "score"):
                number = value.get(key)
                if isinstance(number, (int, float)) and not isinstance(number, bool):
                    return float(number)
    return None


def parse_score(text: str, low: float = 0.0, high: float = 1.0) -> float:
    """The judge's number in `text`, clamped into [low, high] (see the module docstring)."""
    number = _json_result(text)
    if number is None:
        plain = _FRACTION.sub(r"\1", text)
        labelled = _LABELLED.findall(plain)
        found = labelled or _ANY_NUMBER.findall(plain)
        if not found:
            shown = text.strip()[:200] or "(nothing)"
            raise GraderError(
                "model_grader_parse_error", f"the judge's answer has no number: {shown!r}"
            )
        number = float(labelled[0] if labelled else found[-1])
    return min(high, max(low, number))
