"""Which training methods a data file can feed, said before anyone trains on it.

Why: a file of preference pairs is well-formed data, but `supervised` training cannot learn
from it (the methods that can are `dpo` and `orpo`), and a chat file cannot feed DPO; a file of
prompts (format `prompts`, read when the method is `reinforcement`) feeds only reinforcement.
Validation and training say the same thing here, in one place: what each method learns from,
whether this version trains it (`tunesmith.config.METHODS_NOT_YET`), and so which methods fit a
file.
"""

from __future__ import annotations

from tunesmith.config import METHOD_NAMES, METHODS_NOT_YET
from tunesmith.errors import ConfigError

# What each method (config's method.type) learns from: the kind of records it needs
# ("sft": conversations, "preference": preference pairs) and how to say so to a person.
METHOD_DATA: dict[str, tuple[str, str]] = {
    "supervised": ("sft", "conversations (messages with assistant answers)"),
    "dpo": ("preference", "preference pairs (a prompt with a chosen and a rejected answer)"),
    "orpo": ("preference", "preference pairs (a prompt with a chosen and a rejected answer)"),
    "reinforcement": (
        "prompt",
        "prompts (messages ending with a user turn; the other fields are the grader's item)",
    ),
}
KIND_TEXT = {
    "sft": "conversations",
    "preference": "preference pairs (chosen/rejected)",
    "prompt": "prompts (no answers)",
}


def method_type(name: str) -> str:
    """The method.type a name means (`sft` is `supervised`), or a ConfigError listing them."""
    found = METHOD_NAMES.get(str(name).strip().lower())
    if found is None:
        raise ConfigError(
            f"unknown method '{name}'",
            param="method",
            hint=f"use one of {', '.join(METHOD_DATA)}",
        )
    return found


def methods_for(kind: str | None) -> dict[str, str]:
    """Every method and what it makes of a file of `kind` records: "usable", or why not."""
    out: dict[str, str] = {}
    for method, (needs, text) in METHOD_DATA.items():
        if kind is not None and needs != kind:
            out[method] = f"needs {text}"
        elif method in METHODS_NOT_YET:
            out[method] = f"fits the data, but {METHODS_NOT_YET[method]}"
        else:
            out[method] = "usable"
    return out


def usable_methods(kind: str | None) -> list[str]:
    return [m for m, status in methods_for(kind).items() if status == "usable"]


def mismatch(kind: str | None, method: str) -> str | None:
    """Why `method` cannot train on a file of `kind` records (None when it can)."""
    if kind is None or method not in METHOD_DATA:
        return None
    needs, text = METHOD_DATA[method]
    if needs == kind:
        return METHODS_NOT_YET.get(method)
    fitting = [m for m, (k, _) in METHOD_DATA.items() if k == kind]
    said = []
    for m in fitting:
        note = f" ({METHODS_NOT_YET[m]})" if m in METHODS_NOT_YET else ""
        said.append(f"'{m}'{note}")
    for_whom = f"; they are for method {' or '.join(said)}" if said else ""
    return (
        f"method '{method}' trains on {text}, but this file holds "
        f"{KIND_TEXT.get(kind, kind)}{for_whom}"
    )
