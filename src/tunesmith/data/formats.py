"""Formats: detect which of the common layouts a row uses and convert it to a canonical record.

Convert once, early: after this module nothing knows which format the user wrote. Supported
(name → keys):

- `chat`              OpenAI chat: {"messages": [{"role", "content", "weight"?, "name"?}]}
- `alpaca`            {"instruction", "input"?, "output", "system"?}
- `prompt_completion` {"prompt", "completion"}             (trains the completion only)
- `input_output`      {"input", "output"}                  (trains the output only)
- `sharegpt`          {"conversations": [{"from": "human"|"gpt"|"system", "value"}]}
- `openai_dpo`        {"input": {"messages": [...]}, "preferred_output": [...],
                       "non_preferred_output": [...]}      (preference pair)
- `preference`        {"prompt", "chosen", "rejected"}     (preference pair)
- `prompts`           {"messages": [... ending with a user turn], **any other fields}
                      (reinforcement fine-tuning: the other fields are the grader's `item`;
                      never detected from keys, chosen by `method: reinforcement`)

Every format also accepts the metadata keys `id` and `metadata` (kept in `record.meta`); any
other unknown key is an error, because a misspelt key ("complition") silently ignored is how
rows train on nothing. Problems raise `RowError` (a `DataError`) carrying a stable `code`, the
`field` and the source line, so the validator can report them all.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, cast

from tunesmith.data.records import (
    ROLES,
    Conversation,
    Message,
    PreferencePair,
    Prompt,
    Record,
    Role,
    Source,
)
from tunesmith.errors import DataError

FORMATS: tuple[str, ...] = (
    "chat",
    "alpaca",
    "prompt_completion",
    "input_output",
    "sharegpt",
    "openai_dpo",
    "preference",
    "prompts",
)
PREFERENCE_FORMATS = ("openai_dpo", "preference")
FORMAT_ALIASES = {
    "openai": "chat",
    "messages": "chat",
    "prompt-completion": "prompt_completion",
    "completion": "prompt_completion",
    "input-output": "input_output",
    "dpo": "openai_dpo",
    "openai-dpo": "openai_dpo",
    "prompt_chosen_rejected": "preference",
    "rft": "prompts",
    "reinforcement": "prompts",
}
META_KEYS = frozenset({"id", "metadata"})
KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {  # format -> (required, optional)
    "chat": (frozenset({"messages"}), frozenset()),
    "alpaca": (frozenset({"instruction", "output"}), frozenset({"input", "system"})),
    "prompt_completion": (frozenset({"prompt", "completion"}), frozenset({"system"})),
    "input_output": (frozenset({"input", "output"}), frozenset({"system"})),
    "sharegpt": (frozenset({"conversations"}), frozenset({"system"})),
    "openai_dpo": (frozenset({"input", "preferred_output", "non_preferred_output"}), frozenset()),
    "preference": (frozenset({"prompt", "chosen", "rejected"}), frozenset({"system"})),
}
TOOL_KEYS = ("tool_calls", "function_call", "tool_call_id", "tools", "functions")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


class RowError(DataError):
    """A problem with one row (or the file, when `line` is None) that the validator reports."""

    def __init__(
        self,
        code: str,
        message: str,
        source: Source | None,
        field: str | None = None,
        hint: str | None = None,
        *,
        path: str | None = None,
    ):
        self.field = field
        self.source = source
        self.path = source.path if source else path
        self.line = source.line if source else None
        where = str(source) if source else path
        text = f"{field}: {message}" if field else message
        # the issue code (invalid_json, unknown_role, ...) is this error's `code`
        super().__init__(text, where=where, hint=hint, code=code)
        self.reason = message


def normalize_format(name: str | None) -> str | None:
    """Map user spellings (`--format dpo`) to a canonical format name, or raise."""
    if name in (None, "", "auto"):
        return None
    key = str(name).strip().lower()
    key = FORMAT_ALIASES.get(key, key).replace("-", "_")
    if key not in FORMATS:
        raise DataError(
            f"unknown data format '{name}'", hint=f"use one of: auto, {', '.join(FORMATS)}"
        )
    return key


def detect_format(obj: Mapping[str, Any]) -> str | None:
    """The format a row's keys say it is, or None when they match none."""
    keys = set(obj)
    if "messages" in keys:
        return "chat"
    if "conversations" in keys:
        return "sharegpt"
    if "preferred_output" in keys or "non_preferred_output" in keys:
        return "openai_dpo"
    if "chosen" in keys or "rejected" in keys:
        return "preference"
    if "instruction" in keys:
        return "alpaca"
    if "completion" in keys:
        return "prompt_completion"
    if "output" in keys and "input" in keys:
        return "input_output"
    if "prompt" in keys:
        return "prompt_completion"
    if "output" in keys:
        return "alpaca" if "instruction" in keys else "input_output"
    return None


def did_you_mean(obj: Mapping[str, Any]) -> str | None:
    """'did you mean ...?' for keys that look like misspelt known keys (keys are case-sensitive)."""
    known = sorted({k for required, optional in KEYS.values() for k in required | optional})
    guesses = []
    for key in sorted(obj, key=str)[:20]:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key).strip().lower(), known, n=1, cutoff=0.75)
        if close:
            guesses.append(f"'{close[0]}' (not '{key}')")
    return f"did you mean {', '.join(guesses[:3])}?" if guesses else None


def unknown_format_error(obj: Mapping[str, Any], source: Source) -> RowError:
    """The error for a row whose keys match no format, suggesting the key it probably meant."""
    hint = did_you_mean(obj) or (
        "expected e.g. messages, instruction/output, prompt/completion, "
        "input/output, conversations, prompt/chosen/rejected"
    )
    return RowError(
        "unknown_format",
        f"cannot tell the format from the keys {sorted(obj)[:8]}",
        source,
        hint=hint,
    )


def convert_row(obj: Mapping[str, Any], fmt: str, source: Source) -> Record:
    """Convert one parsed row in format `fmt` to a canonical record (raises `RowError`)."""
    if fmt == "prompts":
        return _prompt(obj, source)
    _check_keys(obj, fmt, source)
    meta = {k: obj[k] for k in META_KEYS if k in obj}
    if fmt == "chat":
        messages = _chat_messages(obj["messages"], "messages", source)
        return _conversation(messages, source, meta=meta)
    if fmt == "sharegpt":
        messages = _sharegpt_messages(obj["conversations"], source)
        messages = _with_system(obj, messages, source)
        return _conversation(messages, source, meta=meta)
    if fmt == "alpaca":
        instruction = _text(obj, "instruction", source)
        extra = _text(obj, "input", source, required=False, allow_empty=True)
        user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        messages = [Message("user", user), Message("assistant", _text(obj, "output", source))]
        return _conversation(_with_system(obj, messages, source), source, meta=meta)
    if fmt in ("prompt_completion", "input_output"):
        pkey, ckey = ("prompt", "completion") if fmt == "prompt_completion" else ("input", "output")
        messages = [
            Message("user", _text(obj, pkey, source)),
            Message("assistant", _text(obj, ckey, source)),
        ]
        return _conversation(
            _with_system(obj, messages, source), source, completion_only=True, meta=meta
        )
    if fmt == "openai_dpo":
        inp = obj["input"]
        if not isinstance(inp, Mapping) or "messages" not in inp:
            raise RowError("bad_type", 'must be an object {"messages": [...]}', source, "input")
        for key in inp:
            if key in TOOL_KEYS:
                raise _tools_error(source, f"input.{key}")
            if key != "messages":
                raise RowError("unknown_key", f"unknown key '{key}'", source, "input")
        prompt = _chat_messages(inp["messages"], "input.messages", source)
        _check_prompt(prompt, source, "input.messages")
        chosen = _dpo_answer(obj["preferred_output"], "preferred_output", source)
        rejected = _dpo_answer(obj["non_preferred_output"], "non_preferred_output", source)
        return _pair(prompt, chosen, rejected, source, meta, fmt)
    if fmt == "preference":
        raw = obj["prompt"]
        if isinstance(raw, list):
            prompt = _chat_messages(raw, "prompt", source)
        else:
            prompt = [Message("user", _text(obj, "prompt", source))]
        prompt = _with_system(obj, prompt, source)
        _check_prompt(prompt, source, "prompt")
        chosen = _pref_answer(obj["chosen"], "chosen", source)
        rejected = _pref_answer(obj["rejected"], "rejected", source)
        return _pair(prompt, chosen, rejected, source, meta, fmt)
    raise DataError(f"unknown data format '{fmt}'")  # pragma: no cover - normalized earlier


def _prompt(obj: Mapping[str, Any], source: Source) -> Prompt:
    """A reinforcement prompt: `messages` (system/developer, then alternating user and
    assistant turns, ending with the user's), every other field the grader's `item`.

    A final assistant turn is an error, not silently dropped or trained on: the model writes
    the answer here, and an answer in the data is either a reference for the grader (put it
    in a field such as `reference_answer`) or a row meant for supervised training."""
    for key in TOOL_KEYS:
        if key in obj:
            raise _tools_error(source, key)
    if obj.get("messages") is None:
        raise RowError(
            "missing_key",
            "missing key 'messages' (format prompts needs messages; other keys are the "
            "grader's item)",
            source,
            "messages",
            hint=did_you_mean(obj),
        )
    raw = obj["messages"]
    if isinstance(raw, list):  # OpenAI's developer role is the system prompt
        raw = [
            {**m, "role": "system"} if isinstance(m, Mapping) and m.get("role") == "developer"
            else m
            for m in raw
        ]  # fmt: skip
    messages = _chat_messages(raw, "messages", source)
    last = len(messages) - 1
    if messages[last].role == "assistant":
        raise RowError(
            "role_order",
            "a reinforcement prompt must end with a user message: the model writes the "
            "answer the grader scores",
            source,
            f"messages[{last}].role",
            hint="drop the final assistant turn, or move it into a field such as "
            "reference_answer for the grader to compare with",
        )
    for i, m in enumerate(messages):
        if m.weight is not None:
            raise RowError(
                "bad_weight", "weights mean nothing in a prompt", source, f"messages[{i}].weight"
            )
    _check_prompt(messages, source, "messages")
    item = {k: v for k, v in obj.items() if k != "messages"}
    meta = {k: obj[k] for k in META_KEYS if k in obj}
    return Prompt(tuple(messages), item, source, meta)


def _tools_error(source: Source, field: str) -> RowError:
    return RowError(
        "unsupported",
        "tool calls are not supported yet",
        source,
        field,
        hint="remove tool/function messages, or keep only plain system/user/assistant turns",
    )


def _check_keys(obj: Mapping[str, Any], fmt: str, source: Source) -> None:
    required, optional = KEYS[fmt]
    for key in TOOL_KEYS:
        if key in obj:
            raise _tools_error(source, key)
    for key in sorted(required):
        if key not in obj or obj[key] is None:
            raise RowError(
                "missing_key",
                f"missing key '{key}' (format {fmt} needs {', '.join(sorted(required))})",
                source,
                key,
                hint=did_you_mean(obj),
            )
    for key in obj:
        if key not in required and key not in optional and key not in META_KEYS:
            raise RowError(
                "unknown_key",
                f"unknown key '{key}' for format {fmt}",
                source,
                key,
                hint=f"allowed: {', '.join(sorted(required | optional | META_KEYS))}",
            )


def _text(
    obj: Mapping[str, Any],
    key: str,
    source: Source,
    *,
    required: bool = True,
    allow_empty: bool = False,
) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise RowError("missing_key", f"missing key '{key}'", source, key)
        return ""
    if not isinstance(value, str):
        raise RowError("bad_type", f"must be a string, got {type(value).__name__}", source, key)
    if not allow_empty and not value.strip():
        raise RowError("empty_content", "is empty", source, key)
    return value


def _chat_messages(raw: Any, field: str, source: Source) -> list[Message]:
    if not isinstance(raw, list):
        raise RowError("bad_type", "must be a list of messages", source, field)
    if not raw:
        raise RowError("empty_content", "has no messages", source, field)
    out: list[Message] = []
    for i, m in enumerate(raw):
        f = f"{field}[{i}]"
        if not isinstance(m, Mapping):
            raise RowError("bad_type", "must be an object with role and content", source, f)
        for key in TOOL_KEYS:
            if key in m:
                raise _tools_error(source, f"{f}.{key}")
        for key in m:
            if key not in ("role", "content", "weight", "name"):
                raise RowError(
                    "unknown_key",
                    f"unknown key '{key}'",
                    source,
                    f,
                    hint="a message has role, content and optional weight, name",
                )
        if "role" not in m:
            raise RowError("missing_key", "missing key 'role'", source, f)
        role = m["role"]
        if role in ("tool", "function", "ipython"):
            raise _tools_error(source, f"{f}.role")
        if role not in ROLES:
            raise RowError(
                "unknown_role",
                f"unknown role {role!r}",
                source,
                f"{f}.role",
                hint="roles are system, user and assistant",
            )
        if "content" not in m or m["content"] is None:
            raise RowError("missing_key", "missing key 'content'", source, f)
        content = m["content"]
        if isinstance(content, list):
            content = _content_parts(content, source, f"{f}.content")
        if not isinstance(content, str):
            raise RowError("bad_type", "content must be a string", source, f"{f}.content")
        if not content.strip():
            raise RowError("empty_content", "content is empty", source, f"{f}.content")
        weight = m.get("weight")
        if weight is not None:
            if isinstance(weight, bool) or weight not in (0, 1):
                raise RowError(
                    "bad_weight", f"weight must be 0 or 1, got {weight!r}", source, f"{f}.weight"
                )
            if role != "assistant":
                raise RowError(
                    "bad_weight",
                    "weight is only allowed on assistant messages",
                    source,
                    f"{f}.weight",
                )
            weight = int(weight)
        name = m.get("name")
        if name is not None and not isinstance(name, str):
            raise RowError("bad_type", "name must be a string", source, f"{f}.name")
        out.append(Message(role, content, weight, name))
    return out


def _content_parts(parts: list[Any], source: Source, field: str) -> str:
    """OpenAI content parts: only text parts are supported (images etc. are not)."""
    texts = []
    for i, part in enumerate(parts):
        if not isinstance(part, Mapping):
            raise RowError(
                "bad_type",
                "content must be a string or a list of text parts "
                f"({{'type': 'text', 'text': ...}}); part {i} is {type(part).__name__}",
                source,
                field,
            )
        if part.get("type") == "text" and not isinstance(part.get("text", ""), str):
            raise RowError("bad_type", "text must be a string", source, f"{field}[{i}].text")
        if part.get("type") != "text":
            kind = part.get("type")
            raise RowError(
                "unsupported",
                f"content part of type {kind!r} is not supported yet",
                source,
                field,
                hint="only text content is supported",
            )
        texts.append(part.get("text", ""))
    return "".join(texts)


def _sharegpt_messages(raw: Any, source: Source) -> list[Message]:
    if not isinstance(raw, list):
        raise RowError("bad_type", "must be a list of turns", source, "conversations")
    if not raw:
        raise RowError("empty_content", "has no turns", source, "conversations")
    out: list[Message] = []
    for i, turn in enumerate(raw):
        f = f"conversations[{i}]"
        if not isinstance(turn, Mapping):
            raise RowError("bad_type", 'must be an object {"from", "value"}', source, f)
        for key in turn:
            if key not in ("from", "value", "weight"):
                raise RowError("unknown_key", f"unknown key '{key}'", source, f)
        if "from" not in turn:
            raise RowError("missing_key", "missing key 'from'", source, f)
        who = turn["from"]
        if who in ("function_call", "observation", "tool", "function"):
            raise _tools_error(source, f"{f}.from")
        role = SHAREGPT_ROLES.get(who) if isinstance(who, str) else None
        if role is None:
            raise RowError(
                "unknown_role",
                f"unknown speaker {who!r}",
                source,
                f"{f}.from",
                hint="use human, gpt or system",
            )
        value = turn.get("value")
        if value is None:
            raise RowError("missing_key", "missing key 'value'", source, f)
        if not isinstance(value, str):
            raise RowError("bad_type", "value must be a string", source, f"{f}.value")
        if not value.strip():
            raise RowError("empty_content", "value is empty", source, f"{f}.value")
        weight = turn.get("weight")
        if weight is not None and (isinstance(weight, bool) or weight not in (0, 1)):
            raise RowError(
                "bad_weight", f"weight must be 0 or 1, got {weight!r}", source, f"{f}.weight"
            )
        if weight is not None and role != "assistant":
            raise RowError(
                "bad_weight",
                "weight is only allowed on gpt (assistant) turns",
                source,
                f"{f}.weight",
            )
        out.append(Message(cast(Role, role), value, None if weight is None else int(weight)))
    return out


def _with_system(obj: Mapping[str, Any], messages: list[Message], source: Source) -> list[Message]:
    if obj.get("system") in (None, ""):
        return messages
    system = _text(obj, "system", source)
    if messages and messages[0].role == "system":
        raise RowError(
            "role_order", "has both a 'system' key and a system message", source, "system"
        )
    return [Message("system", system), *messages]


def check_role_order(
    messages: tuple[Message, ...] | list[Message], source: Source, field: str = "messages"
) -> None:
    """System only first; then user and assistant alternate, starting with user and ending with
    an assistant answer (trailing prompts train nothing and usually mean a cut-off row)."""
    if not any(m.role == "assistant" for m in messages):
        raise RowError(
            "no_assistant", "has no assistant message (nothing to train on)", source, field
        )
    prev: str | None = None
    for i, m in enumerate(messages):
        f = f"{field}[{i}].role"
        if m.role == "system":
            if i != 0:
                raise RowError("role_order", "a system message may only come first", source, f)
        elif prev in (None, "system"):
            if m.role != "user":
                raise RowError(
                    "role_order",
                    "the first message after the system prompt must be from the user",
                    source,
                    f,
                )
        elif m.role == prev:
            raise RowError(
                "role_order",
                f"two {m.role} messages in a row",
                source,
                f,
                hint="user and assistant turns must alternate",
            )
        prev = m.role
    if prev != "assistant":
        raise RowError(
            "role_order",
            "the conversation must end with an assistant message",
            source,
            f"{field}[{len(messages) - 1}].role",
        )
    if not any(m.trained for m in messages):
        raise RowError(
            "no_assistant",
            "every assistant message has weight 0 (nothing to train on)",
            source,
            field,
        )


def _check_prompt(prompt: list[Message], source: Source, field: str) -> None:
    prev = None
    for i, m in enumerate(prompt):
        if m.role == "system" and i != 0:
            raise RowError(
                "role_order", "a system message may only come first", source, f"{field}[{i}].role"
            )
        if m.role != "system" and m.role == prev:
            raise RowError(
                "role_order", f"two {m.role} messages in a row", source, f"{field}[{i}].role"
            )
        prev = m.role
    if prev != "user":
        raise RowError("role_order", "the prompt must end with a user message", source, field)


def _conversation(
    messages: list[Message],
    source: Source,
    *,
    completion_only: bool = False,
    meta: dict[str, Any] | None = None,
) -> Conversation:
    check_role_order(messages, source)
    return Conversation(tuple(messages), source, completion_only, meta or {})


def _pair(
    prompt: list[Message],
    chosen: str,
    rejected: str,
    source: Source,
    meta: dict[str, Any],
    fmt: str,
) -> PreferencePair:
    if chosen.strip() == rejected.strip():
        field = "non_preferred_output" if fmt == "openai_dpo" else "rejected"
        raise RowError(
            "identical_pair",
            "the preferred and the rejected answer are the same (nothing to learn from this pair)",
            source,
            field,
        )
    return PreferencePair(tuple(prompt), chosen, rejected, source=source, meta=meta)


def _dpo_answer(raw: Any, field: str, source: Source) -> str:
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], Mapping):
        msgs = _chat_messages(raw, field, source)
        if msgs[0].role != "assistant":
            raise RowError(
                "role_order", "must be one assistant message", source, f"{field}[0].role"
            )
        return msgs[0].content
    raise RowError(
        "bad_type",
        'must be a list with one message {"role": "assistant", "content": ...}',
        source,
        field,
    )


def _pref_answer(raw: Any, field: str, source: Source) -> str:
    if isinstance(raw, str):
        if not raw.strip():
            raise RowError("empty_content", "is empty", source, field)
        return raw
    if isinstance(raw, list) and raw and isinstance(raw[-1], Mapping):
        msgs = _chat_messages(raw, field, source)
        if msgs[-1].role != "assistant":
            raise RowError("role_order", "must end with an assistant message", source, field)
        return msgs[-1].content
    raise RowError(
        "bad_type", "must be a string (or a list ending in an assistant message)", source, field
    )


def message_dicts(messages: tuple[Message, ...] | list[Message]) -> list[dict[str, Any]]:
    """Messages as the plain dicts chat templates (and OpenAI clients) expect."""
    out = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.name is not None:
            d["name"] = m.name
        out.append(d)
    return out


def record_to_json(record: Record, *, keep_weights: bool = True) -> dict[str, Any]:
    """A record in the canonical output format: OpenAI chat, OpenAI DPO for pairs, OpenAI's
    reinforcement rows (messages plus the item's fields) for prompts."""
    if isinstance(record, Prompt):
        return {"messages": message_dicts(record.messages), **record.item}
    if isinstance(record, PreferencePair):
        out: dict[str, Any] = {
            "input": {"messages": message_dicts(record.prompt)},
            "preferred_output": [{"role": "assistant", "content": record.chosen}],
            "non_preferred_output": [{"role": "assistant", "content": record.rejected}],
        }
    else:
        msgs = []
        last_assistant = max(
            (i for i, m in enumerate(record.messages) if m.role == "assistant"), default=-1
        )
        for i, m in enumerate(record.messages):
            d: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.name is not None:
                d["name"] = m.name
            weight = m.weight
            if record.completion_only and m.role == "assistant" and i != last_assistant:
                weight = 0
            if keep_weights and m.role == "assistant" and weight is not None:
                d["weight"] = weight
            msgs.append(d)
        out = {"messages": msgs}
    for key in ("id", "metadata"):
        if key in record.meta:
            out[key] = record.meta[key]
    return out
