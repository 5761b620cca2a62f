"""A small interpreter for the subset of Go's text/template that Ollama TEMPLATEs use.

No Go toolchain is available to the tests, so this executes the Modelfile TEMPLATE we emit with
Go's semantics for: literal text, `{{ .Field }}`, `{{ "string" }}`, `{{ if X }}`,
`{{ else if X }}`, `{{ else }}`, `{{ end }}`, `{{ range .Messages }}` (dot becomes the message),
conditions `.Field` (truthy) and `eq .Field "value"`, and the `{{-`/`-}}` trim markers. Anything
else raises, so a template outside the subset fails the test instead of passing silently.
"""

from __future__ import annotations

import json
import re
from typing import Any

# An action; quoted strings inside it may contain "}}", as Go's lexer allows.
_ACTION = re.compile(r'\{\{(-?)\s*((?:"(?:[^"\\]|\\.)*"|[^"])*?)\s*(-?)\}\}', re.S)


def _tokens(template: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if m.group(1):
            text = text.rstrip()
        if out and out[-1][0] == "trim_next":
            out.pop()
            text = text.lstrip()
        out.append(("text", text))
        out.append(("action", m.group(2)))
        if m.group(3):
            out.append(("trim_next", ""))
        pos = m.end()
    tail = template[pos:]
    if out and out[-1][0] == "trim_next":
        out.pop()
        tail = tail.lstrip()
    out.append(("text", tail))
    return out


def _value(expr: str, dot: Any, root: dict[str, Any]) -> Any:
    if expr.startswith('"'):
        return json.loads(expr)
    if expr.startswith("$."):
        return root.get(expr[2:], "")
    if expr.startswith("."):
        return dot.get(expr[1:], "") if isinstance(dot, dict) else ""
    raise ValueError(f"unsupported expression {expr!r}")


def _cond(expr: str, dot: Any, root: dict[str, Any]) -> bool:
    m = re.fullmatch(r'eq (\S+) ("(?:[^"\\]|\\.)*")', expr)
    if m:
        return _value(m.group(1), dot, root) == json.loads(m.group(2))
    return bool(_value(expr, dot, root))


def _parse(tokens: list[tuple[str, str]], i: int, stops: tuple[str, ...]) -> tuple[list, int]:
    nodes: list = []
    while i < len(tokens):
        kind, body = tokens[i]
        if kind == "text":
            nodes.append(("text", body))
            i += 1
            continue
        if body == "end" or body == "else" or body.startswith("else if "):
            if body.split(" ")[0] in stops or body in stops:
                return nodes, i
            raise ValueError(f"unexpected {body!r}")
        if body.startswith("if "):
            branches = []
            cond = body[3:]
            i += 1
            while True:
                block, i = _parse(tokens, i, ("end", "else"))
                branches.append((cond, block))
                stop = tokens[i][1]
                i += 1
                if stop == "end":
                    break
                cond = stop[8:] if stop.startswith("else if ") else None
            nodes.append(("if", branches))
            continue
        if body.startswith("range "):
            block, i = _parse(tokens, i + 1, ("end",))
            i += 1
            nodes.append(("range", body[6:], block))
            continue
        nodes.append(("expr", body))
        i += 1
    if stops:
        raise ValueError("unterminated block")
    return nodes, i


def _run(nodes: list, dot: Any, root: dict[str, Any], out: list[str]) -> None:
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            out.append(str(_value(node[1], dot, root)))
        elif node[0] == "if":
            for cond, block in node[1]:
                if cond is None or _cond(cond, dot, root):
                    _run(block, dot, root, out)
                    break
        elif node[0] == "range":
            for item in _value(node[1], dot, root) or []:
                _run(node[2], item, root, out)


def render(template: str, values: dict[str, Any]) -> str:
    """Execute `template` with `values` (e.g. System, Messages) like Go's text/template."""
    nodes, _ = _parse(_tokens(template), 0, ())
    out: list[str] = []
    _run(nodes, values, values, out)
    return "".join(out)


def ollama_values(messages: list[dict[str, str]]) -> dict[str, Any]:
    """What Ollama passes a template for a chat: system prompt(s) as .System, turns as .Messages."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    return {
        "System": system,
        "Messages": [dict(Role=m["role"], Content=m["content"]) for m in messages],
    }
