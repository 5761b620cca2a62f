"""`score_model` and `label_model` grader objects: a local judge model reads templated messages.

OpenAI's shapes: `model` (here: a judge the caller allows, see `judge.py`), `input` (chat
messages whose `content` is a template, or a list of `input_text` / `output_text` parts; the
`developer` role is sent as `system`, since local chat templates know no other), and
`sampling_params` (`max_completions_tokens`, `temperature`, `top_p`, `seed`; greedy by
default; `reasoning_effort` is accepted and has no effect). `score_model` answers a number in
`range` (default [0, 1]); `label_model` names one of `labels`, passing when it is one of
`passing_labels`. Images and audio are refused when the grader is built: local judges read
text only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tunesmith.graders.compiled import Build, Compiled, Run
from tunesmith.graders.failures import GraderError
from tunesmith.graders.judge import JudgeSettings, Messages, parse_score
from tunesmith.graders.string_check import extract_choice
from tunesmith.graders.templates import Template, parse_template

ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text")
_BASE = ("type", "name")


def _messages(obj: Mapping[str, Any], path: str, b: Build) -> list[tuple[str, list[Template]]]:
    value = obj.get("input")
    if not isinstance(value, list) or not value:
        b.check.error(f"{path}.input", "must be a non-empty list of messages")
        return []
    out: list[tuple[str, list[Template]]] = []
    for i, message in enumerate(value):
        where = f"{path}.input[{i}]"
        m = b.check.mapping(message, where)
        if m is None:
            continue
        b.check.keys(m, where, ("role", "content", "type"))
        if m.get("type", "message") != "message":
            b.check.error(f"{where}.type", "must be message")
        role = b.check.choice(m, "role", where, ROLES)
        content = m.get("content")
        parts = content if isinstance(content, list) else [content]
        templates: list[Template] = []
        for j, part in enumerate(parts):
            part_path = f"{where}.content" + (f"[{j}]" if isinstance(content, list) else "")
            if isinstance(part, Mapping):
                kind = part.get("type")
                if kind not in TEXT_PARTS:
                    b.check.error(
                        f"{part_path}.type",
                        f"{kind!r} is not supported by local judges (text only: "
                        f"{', '.join(TEXT_PARTS)})",
                    )
                    continue
                part, part_path = part.get("text"), f"{part_path}.text"
            template, errors = parse_template(part, part_path, b.item)
            b.check.errors.extend(errors)
            if template is not None:
                templates.append(template)
        if role is not None:
            out.append((role, templates))
    return out


def _render(messages: list[tuple[str, list[Template]]], r: Run) -> Messages:
    return [
        {
            "role": "system" if role == "developer" else role,
            "content": "\n".join(t.render(r.values) for t in parts),
        }
        for role, parts in messages
    ]


def _judge_settings(obj: Mapping[str, Any], path: str, b: Build) -> JudgeSettings:
    params = obj.get("sampling_params")
    if params is None:
        return JudgeSettings()
    where = f"{path}.sampling_params"
    m = b.check.mapping(params, where)
    if m is None:
        return JudgeSettings()
    b.check.keys(
        m, where, ("max_completions_tokens", "temperature", "top_p", "seed", "reasoning_effort")
    )
    tokens = b.check.number(m, "max_completions_tokens", where, 256, minimum=1)
    temperature = b.check.number(m, "temperature", where, 0.0, minimum=0.0)
    top_p = b.check.number(m, "top_p", where, 1.0, minimum=0.0)
    seed = m.get("seed", 0)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        b.check.error(f"{where}.seed", f"must be an integer (got {seed!r})")
        seed = 0
    return JudgeSettings(int(tokens or 256), temperature or 0.0, top_p or 1.0, seed)


def _judge(obj: Mapping[str, Any], path: str, b: Build) -> str | None:
    model = b.check.string(obj, "model", path)
    if model is None:
        return None
    if b.judges is None:
        b.check.error(
            f"{path}.model", "no judge models are allowed here (the caller passes judges=...)"
        )
        return None
    if not b.judges.allows(model):
        allowed = ", ".join(b.judges.names()) or "none"
        b.check.error(
            f"{path}.model", f"{model!r} is not an allowed judge model (allowed: {allowed})"
        )
        return None
    return model


def score_model(obj: Mapping[str, Any], path: str, b: Build) -> Compiled | None:
    b.check.keys(
        obj, path, (*_BASE, "model", "input", "range", "sampling_params", "pass_threshold")
    )
    model, messages = _judge(obj, path, b), _messages(obj, path, b)
    settings = _judge_settings(obj, path, b)
    b.check.number(obj, "pass_threshold", path)
    bounds = obj.get("range", [0.0, 1.0])
    ok_bounds = (
        isinstance(bounds, list)
        and len(bounds) == 2
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in bounds)
        and bounds[0] < bounds[1]
    )
    if not ok_bounds:
        b.check.error(
            f"{path}.range", f"must be two numbers [low, high], low < high (got {bounds!r})"
        )
        return None
    low, high = float(bounds[0]), float(bounds[1])
    if model is None or not messages:
        return None
    judges = b.judges
    assert judges is not None

    def node(r: Run) -> float:
        reply = judges.complete(model, [_render(messages, r)], settings)[0]
        return parse_score(reply, low, high)

    return Compiled(node, bounded=(low, high) == (0.0, 1.0), details={"range": [low, high]})


def label_model(obj: Mapping[str, Any], path: str, b: Build) -> Compiled | None:
    b.check.keys(
        obj, path, (*_BASE, "model", "input", "labels", "passing_labels", "sampling_params")
    )
    model, messages = _judge(obj, path, b), _messages(obj, path, b)
    settings = _judge_settings(obj, path, b)
    labels, passing = obj.get("labels"), obj.get("passing_labels")
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) and x for x in labels)):
        b.check.error(f"{path}.labels", "must be a non-empty list of labels")
        return None
    if not (isinstance(passing, list) and passing and set(passing) <= set(labels)):
        b.check.error(f"{path}.passing_labels", "must be a non-empty subset of labels")
        return None
    if model is None or not messages:
        return None
    judges = b.judges
    assert judges is not None

    def node(r: Run) -> float:
        reply = judges.complete(model, [_render(messages, r)], settings)[0]
        label = extract_choice(reply, labels)
        if label is None:
            shown = reply.strip()[:200] or "(nothing)"
            raise GraderError(
                "model_grader_parse_error", f"the judge named none of the labels: {shown!r}"
            )
        return float(label in passing)

    return Compiled(node, details={"labels": list(labels), "passing_labels": list(passing)})
