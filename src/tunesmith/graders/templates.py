"""`{{item.x}}` / `{{sample.output_text}}` / `{{sample.output_json.key}}` templates, as OpenAI's.

A grader object names what it compares with templates instead of code, so one object can be
checked before use: every reference is parsed when the grader is built and an unknown one is
an error naming the field (`grader.input: {{sample.outptu_text}}: ...`), not a 0 reward on
every sample of a long run. Only two namespaces exist, as in OpenAI:

- `item`: the dataset row (its extra fields, `reference`, and `messages`: the prompt);
- `sample`: the model's answer: `output_text`, and `output_json` (the answer parsed as JSON,
  strictly; nested keys and list indexes as `output_json.a.b`, `output_json.items[0]` or
  `output_json.items.0`). OpenAI's `output_tools` and `choices` do not exist here.

A value that is not a string is written as JSON (`7`, `true`, `{"a": 1}`). A sample whose
answer is not JSON, or lacks the key, fails with `sample_parse_error` (scored 0: the model's
fault); an item without the field fails with `invalid_variable_error` (the data's fault).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunesmith.graders.base import NOT_JSON, Item, Sample
from tunesmith.graders.failures import GraderError

_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_REF = re.compile(r"^(?P<ns>[A-Za-z_]\w*)(?P<path>(?:\.[^.\[\]\s{}]+|\[\d+\])*)$")
_SEGMENT = re.compile(r"\.([^.\[\]\s{}]+)|\[(\d+)\]")
SAMPLE_FIELDS = ("output_text", "output_json")
_NOT_HERE = ("output_tools", "choices")


@dataclass(frozen=True)
class Ref:
    """One `{{namespace.path}}`: `path` holds the keys (str) and list indexes (int) after it."""

    namespace: str
    path: tuple[str | int, ...]
    text: str


@dataclass(frozen=True)
class Template:
    parts: tuple[str | Ref, ...]

    @property
    def refs(self) -> list[Ref]:
        return [p for p in self.parts if isinstance(p, Ref)]

    def literal(self) -> str:
        """The text of a template without references (references dropped)."""
        return "".join(p for p in self.parts if isinstance(p, str))

    def render(self, values: Values) -> str:
        return "".join(p if isinstance(p, str) else as_text(values.resolve(p)) for p in self.parts)


def as_text(value: Any) -> str:
    """How a value is written into a template: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _parse_ref(body: str) -> Ref | str:
    """The reference in `{{ body }}`, or what is wrong with it."""
    text = body.strip()
    match = _REF.match(text)
    if not match:
        return f"{{{{{body}}}}} is not a reference like {{{{item.field}}}}"
    path: list[str | int] = []
    for key, index in _SEGMENT.findall(match.group("path")):
        path.append(int(index) if index else key)
    ref = Ref(match.group("ns"), tuple(path), text)
    problem = _check_ref(ref)
    return problem or ref


def _check_ref(ref: Ref) -> str | None:
    if ref.namespace not in ("item", "sample"):
        return f"{{{{{ref.text}}}}}: unknown namespace {ref.namespace!r} (use item or sample)"
    if ref.namespace == "item":
        return None
    head = ref.path[0] if ref.path else None
    if head in _NOT_HERE:
        return (
            f"{{{{{ref.text}}}}}: sample.{head} is not produced here "
            "(use sample.output_text or sample.output_json)"
        )
    if head not in SAMPLE_FIELDS:
        return (
            f"{{{{{ref.text}}}}}: unknown sample field "
            "(use sample.output_text or sample.output_json)"
        )
    if head == "output_text" and len(ref.path) > 1:
        return f"{{{{{ref.text}}}}}: sample.output_text is text and has no fields"
    return None


def parse_template(
    text: Any, where: str, item: Mapping[str, Any] | None = None
) -> tuple[Template | None, list[str]]:
    """Parse `text` (the field at `where`); errors name the field. With `item` (an example
    row), item references are also checked against it."""
    if not isinstance(text, str):
        return None, [f"{where}: must be a string (a template such as {{{{sample.output_text}}}})"]
    errors: list[str] = []
    parts: list[str | Ref] = []
    pos = 0
    for match in _TAG.finditer(text):
        if match.start() > pos:
            parts.append(text[pos : match.start()])
        ref = _parse_ref(match.group(1))
        if isinstance(ref, str):
            errors.append(f"{where}: {ref}")
        else:
            parts.append(ref)
            if item is not None and ref.namespace == "item":
                try:
                    _walk(item, ref, "invalid_variable_error")
                except GraderError as exc:
                    errors.append(f"{where}: {exc.message}")
        pos = match.end()
    rest = text[pos:]
    if "{{" in rest:
        errors.append(f"{where}: '{{{{' without a closing '}}}}'")
    if rest:
        parts.append(rest)
    return (None if errors else Template(tuple(parts))), errors


def item_values(item: Item) -> dict[str, Any]:
    """The `item` namespace: the row's fields, plus its `reference` (when it has one) and the
    prompt as `messages` (as in OpenAI, where the item is the whole dataset row) unless the
    row has fields of those names itself."""
    values = dict(item.fields)
    if item.reference:
        values.setdefault("reference", item.reference)
    if item.prompt:
        values.setdefault("messages", [dict(m) for m in item.prompt])
    return values


def _walk(root: Any, ref: Ref, kind: str) -> Any:
    value = root
    done = ref.namespace
    for key in ref.path:
        step = f"{done}[{key}]" if isinstance(key, int) else f"{done}.{key}"
        if isinstance(value, Mapping) and str(key) in value:
            value = value[str(key)]
        elif isinstance(value, list) and (isinstance(key, int) or key.isdigit()):
            index = int(key)
            if index >= len(value):
                raise GraderError(kind, f"{step}: {done} has {len(value)} items")
            value = value[index]
        else:
            whose = "the item" if ref.namespace == "item" and done == "item" else done
            if isinstance(value, Mapping):
                have = ", ".join(sorted(map(str, value))[:12]) or "none"
                raise GraderError(kind, f"{step}: {whose} has no field {key!r} (it has: {have})")
            raise GraderError(kind, f"{step}: {whose} is {type(value).__name__}, not an object")
        done = step
    return value


class Values:
    """What the templates of one grading see: one sample beside one item."""

    def __init__(self, sample: Sample, item: Item):
        self.sample = sample
        self.item = item
        self._item_values: dict[str, Any] | None = None

    @property
    def item_values(self) -> dict[str, Any]:
        if self._item_values is None:
            self._item_values = item_values(self.item)
        return self._item_values

    def resolve(self, ref: Ref) -> Any:
        if ref.namespace == "item":
            return _walk(self.item_values, ref, "invalid_variable_error")
        if ref.path[0] == "output_text":
            return self.sample.output_text
        parsed = self.sample.output_json
        if parsed is NOT_JSON:
            raise GraderError("sample_parse_error", f"{ref.text}: the model's output is not JSON")
        inner = Ref("sample.output_json", ref.path[1:], ref.text)
        return _walk(parsed, inner, "sample_parse_error")
