"""The chat template, taken apart into the literal pieces around each message.

Ollama needs the prompt format as a Go template, llama.cpp and transformers need the stop
token, and both must match the Jinja template the model was trained with exactly. Rather than
parse Jinja, we *render* it on probe conversations with sentinel contents and read off the text
around each message: the system block, the default system block the template inserts when the
conversation has none, the user and assistant wrappers and the generation prompt. The pieces are
then re-assembled on other conversations and compared with the Jinja rendering; only a template
the pieces reproduce exactly is translated. Others get no TEMPLATE line, and the export says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Messages = Sequence[dict[str, str]]
Renderer = Callable[[list[dict[str, str]], bool], str]

_S, _U, _A, _U2, _A2 = "QzSYSq1", "QzUSRq2", "QzASTq3", "QzUSRq4", "QzASTq5"

VALIDATION_CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}],
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one,\nplease."},
    ],
    [
        {"role": "system", "content": "You answer in JSON."},
        {"role": "user", "content": '{"q": 1}'},
        {"role": "assistant", "content": '{"a": 2}'},
    ],
]


@dataclass(frozen=True)
class ChatFormat:
    """Literal text around each message; `default_prefix` stands in for a missing system turn."""

    default_prefix: str
    system_prefix: str
    system_suffix: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_suffix: str
    generation_prompt: str

    def render(self, messages: Messages, add_generation_prompt: bool) -> str:
        """What the Jinja template renders for `messages`, rebuilt from the pieces."""
        parts: list[str] = []
        rest = list(messages)
        if rest and rest[0]["role"] == "system":
            parts += [self.system_prefix, rest[0]["content"], self.system_suffix]
            rest = rest[1:]
        else:
            parts.append(self.default_prefix)
        for message in rest:
            if message["role"] == "user":
                parts += [self.user_prefix, message["content"], self.user_suffix]
            elif message["role"] == "assistant":
                parts += [self.assistant_prefix, message["content"], self.assistant_suffix]
            else:
                raise ValueError(f"role {message['role']!r} is only supported as the first turn")
        if add_generation_prompt:
            parts.append(self.generation_prompt)
        return "".join(parts)


def tokenizer_renderer(tokenizer: Any) -> Renderer:
    def render(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return str(
            tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        )

    return render


def _split_once(text: str, sentinel: str) -> tuple[str, str]:
    if text.count(sentinel) != 1:
        raise ValueError(f"content rendered {text.count(sentinel)} times")
    head, tail = text.split(sentinel)
    return head, tail


def _strip_prefix(text: str, prefix: str) -> str:
    if not text.startswith(prefix):
        raise ValueError("template pieces are not consistent")
    return text[len(prefix) :]


def _probe(render: Renderer) -> ChatFormat:
    def msg(role: str, content: str) -> dict[str, str]:
        return {"role": role, "content": content}

    s, u, a = msg("system", _S), msg("user", _U), msg("assistant", _A)
    system_prefix, system_suffix = _split_once(render([s], False), _S)

    _, after_s = _split_once(render([s, u], False), _S)
    between_su, user_suffix = _split_once(after_s, _U)
    user_prefix = _strip_prefix(between_su, system_suffix)

    _, after_u = _split_once(render([s, u, a], False), _U)
    between_ua, assistant_suffix = _split_once(after_u, _A)
    assistant_prefix = _strip_prefix(between_ua, user_suffix)

    _, gen_tail = _split_once(render([s, u], True), _U)
    generation_prompt = _strip_prefix(gen_tail, user_suffix)

    before_u, _ = _split_once(render([u], False), _U)
    if not before_u.endswith(user_prefix):
        raise ValueError("template pieces are not consistent")
    default_prefix = before_u[: len(before_u) - len(user_prefix)]
    return ChatFormat(
        default_prefix=default_prefix,
        system_prefix=system_prefix,
        system_suffix=system_suffix,
        user_prefix=user_prefix,
        user_suffix=user_suffix,
        assistant_prefix=assistant_prefix,
        assistant_suffix=assistant_suffix,
        generation_prompt=generation_prompt,
    )


def analyse_template(render: Renderer) -> ChatFormat | None:
    """The template's pieces, or None when they do not reproduce the template exactly."""
    try:
        fmt = _probe(render)
        extra = [
            [
                {"role": "user", "content": _U},
                {"role": "assistant", "content": _A},
                {"role": "user", "content": _U2},
                {"role": "assistant", "content": _A2},
            ]
        ]
        for conversation in VALIDATION_CONVERSATIONS + extra:
            for gen in (False, True):
                if fmt.render(conversation, gen) != render(list(conversation), gen):
                    return None
    except Exception:  # a template that raises on a probe (e.g. no system role) is not ours
        return None
    return fmt


def end_of_turn_token(fmt: ChatFormat | None, tokenizer: Any) -> str | None:
    """The special token that closes an assistant turn (what generation must stop on)."""
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            specials.add(str(getattr(token, "content", token)))
    if fmt is not None:
        found = [(fmt.assistant_suffix.find(t), t) for t in specials if t in fmt.assistant_suffix]
        if found:
            return min(found)[1]
    eos = getattr(tokenizer, "eos_token", None)
    return str(eos) if eos else None
