"""Grader specs a user writes (`--metrics a,b,...`, `eval.metrics` in a config) to graders.

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
- `module:function` or `path/to/file.py:function` — a user code grader (see `python.py`).

Some graders depend on the references (the inferred schema, the label set), so a spec is built
against the reference answers it will grade. Held-out loss and perplexity need the model, not
just its text; they live in `tunesmith.eval.loss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.errors import ConfigError
from tunesmith.events import Reporter
from tunesmith.graders import string_check, structured, text_similarity
from tunesmith.graders.base import Grader, Score, parse_json
from tunesmith.graders.python import code_grader

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

# Graders that take no argument: name -> (score, description).
_SIMPLE: dict[str, tuple[Score, str]] = {
    "exact_match": (string_check.exact_match, "normalised exact match"),
    "contains": (string_check.contains, "answer contains the reference"),
    "json_valid": (structured.json_valid, "whole answer is valid JSON"),
    "json_match": (structured.json_match, "same JSON value as the reference"),
    "json_fields": (structured.json_fields, "share of JSON fields right"),
    "rouge_l": (text_similarity.rouge_l, "ROUGE-L F1"),
}


def is_code_grader(spec: str) -> bool:
    """True for a spec that imports user code (`module:function`, `path/to/file.py:function`):
    a `:` after a name that is not a built-in grader (`regex:...`, `json_key:...` are not)."""
    spec = spec.strip()
    return ":" in spec and spec.partition(":")[0] not in BUILTIN


def build_grader(
    spec: str,
    references: Sequence[str],
    schema: dict[str, Any] | None = None,
    on_event: Reporter | None = None,
) -> Grader:
    """Turn a grader spec (see the module docstring) into a `Grader` for these references
    (a code grader's import is announced to `on_event`)."""
    spec = spec.strip()
    name, _, arg = spec.partition(":")
    simple = _SIMPLE.get(name)
    if simple is not None:
        score, description = simple
        return Grader(name, score, description=description)
    if name == "regex":
        if not arg:
            raise ConfigError("the regex metric needs a pattern", hint="e.g. regex:^\\d+$")
        return string_check.regex(arg, name=spec)
    if name == "json_key":
        if not arg:
            raise ConfigError("the json_key metric needs a key", hint="e.g. json_key:category")
        return structured.json_key(arg)
    if name == "json_schema":
        source = "given"
        if schema is None:
            schema = structured.infer_schema(references)
            source = "inferred from the references"
        if schema is None:
            raise ConfigError(
                "json_schema: no schema given and the reference answers are not all JSON",
                hint="set eval.json_schema in the config or pass --schema FILE",
            )
        return structured.json_schema(schema, source)
    if name == "choice":
        labels = [s for s in arg.split("|") if s] if arg else sorted(set(references))
        return string_check.choice(labels)
    if name == "length":
        return Grader(
            name,
            text_similarity.answer_length,
            higher_is_better=None,
            description="answer length in words",
            bounded=False,
        )
    if ":" in spec:
        return code_grader(spec, on_event)
    raise ConfigError(
        f"unknown metric {spec!r}",
        hint=f"use one of {', '.join(BUILTIN)}, or module:function for your own grader",
    )


def default_grader_names(references: Sequence[str]) -> list[str]:
    """Sensible graders for what the references look like; the first is the main metric.

    JSON objects -> structured-output graders led by `json_match` (plus per-key accuracy for up
    to 8 shared keys); a small label set -> `choice`;
    anything else -> `rouge_l` plus exact match and length."""
    parsed = [parse_json(r) for r in references]
    if references and all(isinstance(p, dict) for p in parsed):
        names = ["json_match", "json_fields", "json_schema", "json_valid"]
        keys = [k for k in parsed[0] if all(k in p for p in parsed)]
        if len(keys) <= 8:  # per-field accuracy says *what* improved
            names += [f"json_key:{k}" for k in keys]
        return names
    distinct = {string_check.normalize(r) for r in references}
    short = all(len(r.split()) <= 3 for r in references)
    if references and short and len(distinct) <= max(2, min(20, len(references) // 3)):
        return ["choice", "exact_match", "length"]
    return ["rouge_l", "exact_match", "contains", "length"]


def build_graders(
    names: Sequence[str] | None,
    references: Sequence[str],
    schema: dict[str, Any] | None = None,
    on_event: Reporter | None = None,
) -> list[Grader]:
    """Graders for `names` (default: chosen from the references); a name listed twice is an
    error, since it would count twice in every table."""
    chosen = list(names) if names else default_grader_names(references)
    graders = [build_grader(n, references, schema, on_event) for n in chosen]
    seen: set[str] = set()
    for g in graders:
        if g.name in seen:
            raise ConfigError(f"metric {g.name!r} is listed twice")
        seen.add(g.name)
    return graders
