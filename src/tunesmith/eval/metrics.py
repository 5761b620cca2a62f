"""Per-example task metrics: each scores one model answer against one reference answer.

Every metric returns one number per example, never only an aggregate, because the
base-vs-tuned verdict is a *paired* comparison (see `tunesmith.eval.stats`): the same prompt
answered by both models gives one difference, and the confidence interval comes from those.

Metric names a user can ask for (`--metrics a,b,...`):

- `exact_match`   normalised string equality (case, punctuation, articles, whitespace ignored)
- `contains`      the normalised reference occurs in the normalised answer
- `regex:PATTERN` the answer matches PATTERN (Python `re.search`)
- `json_valid`    the whole answer parses as JSON (strict: no prose, no code fences)
- `json_schema`   the answer is JSON and conforms to a JSON schema: the one the user gives, else
                  one inferred from the reference answers' keys, types and small value sets
- `json_match`    the answer parses to the same JSON value as the reference (key order free)
- `json_fields`   share of the reference object's fields the answer gets exactly right
- `json_key:KEY`  the answer is an object whose KEY equals the reference's
- `choice`        label accuracy: the label the answer names equals the reference label
                  (`choice:a|b|c` fixes the label set; by default it is the references' labels)
- `rouge_l`       ROUGE-L F1 (longest common subsequence of words)
- `length`        answer length in words (no better direction: reported, never "won")
- `module:function` or `path/to/file.py:function` — a user grader called as
                  `fn(prediction, reference)` or `fn(prediction, reference, prompt)`; returns a
                  bool or a number.

Held-out loss and perplexity need the model, not just its text; they live in `loss.py`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import math
import re
import string
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError

Scorer = Callable[[str, str, Sequence[dict[str, str]]], float]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Metric:
    """A named per-example scorer. `higher_is_better` is None for descriptive metrics."""

    name: str
    score: Scorer
    higher_is_better: bool | None = True
    description: str = ""
    bounded: bool = True  # scores lie in [0, 1] (shown as percentages)
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def __call__(self, prediction: str, reference: str, prompt: Sequence[dict[str, str]] = ()):
        return self.score(prediction, reference, prompt)


# --------------------------------------------------------------------------------------------
# Text metrics
# --------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Lower-case, drop punctuation and English articles, collapse whitespace (SQuAD style)."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def contains(prediction: str, reference: str) -> float:
    """1 when the normalised reference occurs in the normalised answer, at word boundaries.

    An empty reference would be "contained" in anything; it only matches an empty answer."""
    ref, pred = normalize(reference), normalize(prediction)
    if not ref:
        return float(not pred)
    return float(f" {ref} " in f" {pred} ")


def regex_scorer(pattern: str) -> Callable[[str, str], float]:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"bad regex metric pattern {pattern!r}: {exc}") from None
    return lambda prediction, _reference: float(compiled.search(prediction) is not None)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length, O(len(a)·len(b)) time, O(len(b)) memory."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens."""
    pred, ref = words(prediction), words(reference)
    if not pred or not ref:
        return float(not pred and not ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_length(prediction: str, _reference: str) -> float:
    return float(len(prediction.split()))


# --------------------------------------------------------------------------------------------
# Structured-output metrics
# --------------------------------------------------------------------------------------------

_MISSING = object()


def parse_json(text: str) -> Any:
    """The JSON value of the whole text, or `_MISSING` (strict: surrounding prose fails)."""
    try:
        return json.loads(text.strip())
    except (ValueError, TypeError):
        return _MISSING


def json_valid(prediction: str, _reference: str) -> float:
    return float(parse_json(prediction) is not _MISSING)


def json_match(prediction: str, reference: str) -> float:
    pred = parse_json(prediction)
    return float(pred is not _MISSING and pred == parse_json(reference))


def json_key_scorer(key: str) -> Callable[[str, str], float]:
    """1 when the answer is a JSON object whose `key` equals the reference's `key`."""

    def score(prediction: str, reference: str) -> float:
        pred, ref = parse_json(prediction), parse_json(reference)
        if not isinstance(pred, dict) or not isinstance(ref, dict) or key not in pred:
            return 0.0
        return float(pred[key] == ref.get(key))

    return score


def json_fields(prediction: str, reference: str) -> float:
    """Share of the reference object's keys whose value the answer reproduces exactly.

    Non-object references fall back to whole-value equality."""
    ref = parse_json(reference)
    pred = parse_json(prediction)
    if not isinstance(ref, dict):
        return float(pred is not _MISSING and pred == ref)
    if not ref:
        return float(pred == {})
    if not isinstance(pred, dict):
        return 0.0
    hits = sum(1 for k, v in ref.items() if k in pred and pred[k] == v)
    return hits / len(ref)


_JSON_TYPES: list[tuple[type, str]] = [
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
    (type(None), "null"),
]


def _json_type(value: Any) -> str:
    for py, name in _JSON_TYPES:
        if isinstance(value, py):
            return name
    return "string"


def infer_schema(references: Sequence[str], max_enum: int = 12) -> dict[str, Any] | None:
    """A JSON schema describing the reference answers, or None when they are not all JSON.

    Objects: keys present in every reference are required, no other keys are allowed, each
    property gets the union of the types seen; a string property whose values come from a small
    set (at most `max_enum` values, each seen about 3+ times on average) becomes an enum, so a
    made-up category fails the schema while free text such as ids does not."""
    values = [parse_json(r) for r in references]
    if not values or any(v is _MISSING for v in values):
        return None
    if not all(isinstance(v, dict) for v in values):
        types = sorted({_json_type(v) for v in values})
        return {"type": types[0] if len(types) == 1 else types}
    keys: list[str] = []
    for v in values:
        keys += [k for k in v if k not in keys]
    properties: dict[str, Any] = {}
    for key in keys:
        seen = [v[key] for v in values if key in v]
        types = sorted({_json_type(x) for x in seen})
        if "integer" in types and "number" in types:
            types.remove("integer")
        prop: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
        strings = sorted({x for x in seen if isinstance(x, str)})
        if strings and len(strings) <= max_enum and len(seen) >= 3 * len(strings):
            prop["enum"] = strings + ([None] if "null" in types else [])
        properties[key] = prop
    required = [k for k in keys if all(k in v for v in values)]
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def json_schema_scorer(schema: dict[str, Any]) -> Callable[[str, str], float]:
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError(
            "the json_schema metric needs the jsonschema package", hint="pip install jsonschema"
        ) from None
    try:
        validator_cls = jsonschema.validators.validator_for(schema)
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"invalid JSON schema for json_schema metric: {exc.message}") from None
    validator = validator_cls(schema)

    def score(prediction: str, _reference: str) -> float:
        value = parse_json(prediction)
        return float(value is not _MISSING and validator.is_valid(value))

    return score


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def extract_choice(prediction: str, labels: Sequence[str]) -> str | None:
    """The label an answer names: the whole answer if it is a label, else the label mentioned
    first (as whole words). Case and punctuation are ignored."""
    pred = normalize(prediction)
    normalised = {normalize(label): label for label in labels}
    if pred in normalised:
        return normalised[pred]
    best: tuple[int, str] | None = None
    padded = f" {pred} "
    for norm, label in normalised.items():
        if not norm:
            continue
        pos = padded.find(f" {norm} ")
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, label)
    return best[1] if best else None


def choice_scorer(labels: Sequence[str]) -> Callable[[str, str], float]:
    labels = list(dict.fromkeys(labels))

    def score(prediction: str, reference: str) -> float:
        picked = extract_choice(prediction, labels)
        return float(picked is not None and normalize(picked) == normalize(reference))

    return score


# --------------------------------------------------------------------------------------------
# User graders
# --------------------------------------------------------------------------------------------


def load_grader(spec: str) -> Scorer:
    """Import `module:function` or `path/to/file.py:function` and wrap it as a scorer."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ConfigError(f"grader {spec!r} must look like module:function")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"grader file {target} does not exist")
            mod_spec = importlib.util.spec_from_file_location(
                f"_tunesmith_grader_{path.stem}", path
            )
            assert mod_spec is not None and mod_spec.loader is not None
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and "." not in sys.path:
                sys.path.insert(0, "")  # like `python -m`: modules beside the user's cwd
            module = importlib.import_module(target)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"could not import grader module {target!r}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"grader {spec!r}: {target} has no function {attr!r}")
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        wants_prompt = len(params) >= 3
    except (TypeError, ValueError):
        wants_prompt = False

    def score(prediction: str, reference: str, prompt: Sequence[dict[str, str]]) -> float:
        value = (
            fn(prediction, reference, list(prompt)) if wants_prompt else fn(prediction, reference)
        )
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"grader {spec} returned {value!r}; it must return a bool or a number"
            ) from None
        if math.isnan(number):
            raise ConfigError(f"grader {spec} returned NaN")
        return number

    return score


# --------------------------------------------------------------------------------------------
# Building metrics from names
# --------------------------------------------------------------------------------------------


def _two(fn: Callable[[str, str], float]) -> Scorer:
    return lambda prediction, reference, _prompt: fn(prediction, reference)


BUILTIN = (
    "exact_match",
    "contains",
    "regex",
    "json_valid",
    "json_schema",
    "json_match",
    "json_fields",
    "json_key",
    "choice",
    "rouge_l",
    "length",
)


# Metrics that take no argument: name -> (scorer(answer, reference), description).
_SIMPLE_METRICS: dict[str, tuple[Callable[[str, str], float], str]] = {
    "exact_match": (exact_match, "normalised exact match"),
    "contains": (contains, "answer contains the reference"),
    "json_valid": (json_valid, "whole answer is valid JSON"),
    "json_match": (json_match, "same JSON value as the reference"),
    "json_fields": (json_fields, "share of JSON fields right"),
    "rouge_l": (rouge_l, "ROUGE-L F1"),
}


def build_metric(
    spec: str, references: Sequence[str], schema: dict[str, Any] | None = None
) -> Metric:
    """Turn a metric name (see module docstring) into a `Metric` for these references."""
    spec = spec.strip()
    name, _, arg = spec.partition(":")
    simple = _SIMPLE_METRICS.get(name)
    if simple is not None:
        scorer, description = simple
        return Metric(name, _two(scorer), description=description)
    if name == "regex":
        if not arg:
            raise ConfigError("the regex metric needs a pattern", hint="e.g. regex:^\\d+$")
        return Metric(spec, _two(regex_scorer(arg)), description=f"matches /{arg}/")
    if name == "json_key":
        if not arg:
            raise ConfigError("the json_key metric needs a key", hint="e.g. json_key:category")
        return Metric(spec, _two(json_key_scorer(arg)), description=f"field {arg!r} right")
    if name == "json_schema":
        source = "given"
        if schema is None:
            schema = infer_schema(references)
            source = "inferred from the references"
        if schema is None:
            raise ConfigError(
                "json_schema: no schema given and the reference answers are not all JSON",
                hint="set eval.json_schema in the config or pass --schema FILE",
            )
        return Metric(
            name,
            _two(json_schema_scorer(schema)),
            description=f"conforms to the JSON schema ({source})",
            details={"schema": schema, "schema_source": source},
        )
    if name == "choice":
        labels = [s for s in arg.split("|") if s] if arg else sorted(set(references))
        if not labels:
            raise ConfigError("the choice metric found no labels")
        return Metric(
            name,
            _two(choice_scorer(labels)),
            description="label accuracy",
            details={"labels": labels},
        )
    if name == "length":
        return Metric(
            name,
            _two(answer_length),
            higher_is_better=None,
            description="answer length in words",
            bounded=False,
        )
    if ":" in spec:
        return Metric(spec, load_grader(spec), description=f"user grader {spec}", bounded=False)
    raise ConfigError(
        f"unknown metric {spec!r}",
        hint=f"use one of {', '.join(BUILTIN)}, or module:function for your own grader",
    )


def default_metric_names(references: Sequence[str]) -> list[str]:
    """Sensible metrics for what the references look like; the first is the main metric.

    JSON objects -> structured-output metrics led by `json_match` (plus per-key accuracy for up
    to 8 shared keys); a small label set -> `choice`;
    anything else -> `rouge_l` plus exact match and length."""
    parsed = [parse_json(r) for r in references]
    if references and all(isinstance(p, dict) for p in parsed):
        names = ["json_match", "json_fields", "json_schema", "json_valid"]
        keys = [k for k in parsed[0] if all(k in p for p in parsed)]  # type: ignore[union-attr]
        if len(keys) <= 8:  # per-field accuracy says *what* improved
            names += [f"json_key:{k}" for k in keys]
        return names
    distinct = {normalize(r) for r in references}
    short = all(len(r.split()) <= 3 for r in references)
    if references and short and len(distinct) <= max(2, min(20, len(references) // 3)):
        return ["choice", "exact_match", "length"]
    return ["rouge_l", "exact_match", "contains", "length"]


def build_metrics(
    names: Sequence[str] | None, references: Sequence[str], schema: dict[str, Any] | None = None
) -> list[Metric]:
    chosen = list(names) if names else default_metric_names(references)
    metrics = [build_metric(n, references, schema) for n in chosen]
    seen: set[str] = set()
    for m in metrics:
        if m.name in seen:
            raise ConfigError(f"metric {m.name!r} is listed twice")
        seen.add(m.name)
    return metrics
