"""Content checks and running statistics: duplicate keys, token-length summaries, and the
whole-file warnings (very short answers, label imbalance, inconsistent system prompts).

Why separate from the pass in `validate`: these are the judgement calls (thresholds, what
counts as a label task) a user may want to read or tune, apart from the streaming machinery.
Everything here is bounded in memory: 64-bit hashes, compact arrays, capped counters.
"""

from __future__ import annotations

import hashlib
import json
import string
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.formats import record_to_json
from tunesmith.data.records import Conversation, PreferencePair, Prompt, Record, Source
from tunesmith.data.report import Issue, ValidationReport
from tunesmith.data.tokenize import TokenizedExample

MIN_EXAMPLES = 10
SHORT_ANSWER_CHARS = 3
LABEL_MAX_CHARS = 40
LABEL_MAX_WORDS = 4
MAX_TRACKED = 1_000  # distinct system prompts / labels tracked before giving up on the check

_PUNCT = str.maketrans(dict.fromkeys(string.punctuation, " "))


def h64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def record_key(record: Record) -> str:
    """Canonical text of a record (format-independent, metadata ignored) for exact duplicates."""
    data = record_to_json(record)
    data.pop("id", None)
    data.pop("metadata", None)
    if isinstance(record, Conversation) and record.completion_only:
        data["completion_only"] = True
    return json.dumps(data, sort_keys=True, ensure_ascii=False)


def normalize(text: str) -> str:
    """Case, spacing and ASCII punctuation folded away (the near-duplicate key)."""
    return " ".join(text.casefold().translate(_PUNCT).split())


def texts_of(record: Record) -> tuple[str, str, str | None]:
    """(prompt text, answer text, system prompt) of a record, for the soft checks (a prompt's
    answer is its item: two rows with one prompt and different items are not duplicates)."""
    if isinstance(record, Prompt):
        msgs = record.messages
        prompt = "\n".join(f"{m.role}:{m.content}" for m in msgs if m.role != "system")
        answer = json.dumps(record.item, sort_keys=True, ensure_ascii=False, default=str)
    elif isinstance(record, PreferencePair):
        msgs = record.prompt
        answer = record.chosen
        prompt = "\n".join(m.content for m in msgs if m.role != "system")
    else:
        msgs = record.messages
        last = max(i for i, m in enumerate(msgs) if m.role == "assistant")
        answer = msgs[last].content
        prompt = "\n".join(f"{m.role}:{m.content}" for m in msgs[:last] if m.role != "system")
    system = msgs[0].content if msgs and msgs[0].role == "system" else None
    return prompt, answer, system


def near_key(record: Record) -> int:
    """64-bit key equal for records that differ only in case, spacing or ASCII punctuation."""
    prompt, answer, _ = texts_of(record)
    return h64(normalize(prompt) + "\x00" + normalize(answer))


@dataclass
class Stats:
    """Running statistics over accepted examples (compact arrays, no token lists)."""

    total: array = field(default_factory=lambda: array("i"))
    prompt: array = field(default_factory=lambda: array("i"))
    trained: array = field(default_factory=lambda: array("i"))
    messages: array = field(default_factory=lambda: array("i"))
    labels: Counter = field(default_factory=Counter)
    label_like: int = 0
    short_lines: list[Source] = field(default_factory=list)
    n_short: int = 0
    systems: dict[int, list[Any]] = field(default_factory=dict)  # hash -> [count, first source]
    systems_overflow: bool = False
    kinds: Counter = field(default_factory=Counter)


def observe(s: Stats, rec: Record, res: TokenizedExample | None) -> None:
    """Add one accepted training example to the running statistics."""
    if isinstance(rec, Prompt):  # no answer: only sizes (the answer checks do not apply)
        s.kinds["prompt"] += 1
        s.messages.append(len(rec.messages))
        if res is not None:
            s.total.append(len(res.input_ids))
            s.trained.append(0)
            s.prompt.append(len(res.input_ids))
        return
    s.kinds["preference" if isinstance(rec, PreferencePair) else "sft"] += 1
    msgs = rec.prompt if isinstance(rec, PreferencePair) else rec.messages
    s.messages.append(len(msgs) + (1 if isinstance(rec, PreferencePair) else 0))
    if res is not None:
        n_trained = res.n_trained
        s.total.append(len(res.input_ids))
        s.trained.append(n_trained)
        s.prompt.append(len(res.input_ids) - n_trained)
    _, answer, system = texts_of(rec)
    stripped = answer.strip()
    if len(stripped) <= LABEL_MAX_CHARS and len(stripped.split()) <= LABEL_MAX_WORDS:
        s.label_like += 1
        if len(s.labels) < MAX_TRACKED:
            s.labels[stripped.casefold().rstrip(".!")] += 1
    if len(stripped) < SHORT_ANSWER_CHARS:
        s.n_short += 1
        if len(s.short_lines) < 20 and rec.source is not None:
            s.short_lines.append(rec.source)
    if not s.systems_overflow:
        key = -1 if system is None else h64(system)
        entry = s.systems.get(key)
        if entry is None:
            if len(s.systems) >= MAX_TRACKED:
                s.systems_overflow = True
            else:
                s.systems[key] = [1, rec.source]
        else:
            entry[0] += 1


def summary(values: array) -> dict[str, float | int] | None:
    if not values:
        return None
    import numpy as np

    a = np.frombuffer(values, dtype=np.int32) if values.typecode == "i" else np.asarray(values)
    return {
        "min": int(a.min()),
        "mean": round(float(a.mean()), 1),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "max": int(a.max()),
        "sum": int(a.sum(dtype=np.int64)),
    }


def is_label_task(s: Stats) -> bool:
    """Short-label data (classification): nearly all answers are a few words, drawn from a small
    set of labels that each recur (on average at least 3 times)."""
    n = len(s.messages)
    return bool(n) and s.label_like >= 0.9 * n and 1 <= len(s.labels) <= min(50, n / 3)


def soft_checks(s: Stats, report: ValidationReport, path: str) -> None:
    """File-level warnings that need the whole file: short answers, labels, system prompts."""
    n = len(s.messages)
    if not n:
        return
    label_task = is_label_task(s)
    if label_task and n >= MIN_EXAMPLES:
        counts = s.labels.most_common()
        top, top_n = counts[0]
        low, low_n = counts[-1]
        if len(counts) == 1:
            report.add(
                Issue(
                    "warning",
                    "label_imbalance",
                    f"every answer is the same label "
                    f"{top!r}; the model will learn to always say it",
                    path,
                )
            )
        elif top_n >= 0.8 * n or top_n >= 5 * low_n:
            report.add(
                Issue(
                    "warning",
                    "label_imbalance",
                    f"labels are imbalanced: {top!r} "
                    f"{top_n}/{n} ({100 * top_n / n:.0f}%) vs {low!r} {low_n}/{n}",
                    path,
                    hint="balance the classes or the model may learn the majority",
                )
            )
    if s.n_short and not label_task:
        lines = ", ".join(str(src.line) for src in s.short_lines[:10])
        more = f" and {s.n_short - 10} more" if s.n_short > 10 else ""
        report.add(
            Issue(
                "warning",
                "short_answer",
                f"{s.n_short} very short answers (under "
                f"{SHORT_ANSWER_CHARS} characters) at lines {lines}{more}",
                path,
                s.short_lines[0].line if s.short_lines else None,
            )
        )
    if len(s.systems) > 1 and not s.systems_overflow:
        missing = s.systems.get(-1)
        present = n - (missing[0] if missing else 0)
        if missing and present:
            first_with = min(
                (e[1] for k, e in s.systems.items() if k != -1), key=lambda src: src.line
            )
            odd = missing[1] if missing[0] <= present else first_with
            report.add(
                Issue(
                    "warning",
                    "system_prompt",
                    f"{present} examples have a system "
                    f"prompt and {missing[0]} do not (first of the fewer: line "
                    f"{odd.line})",
                    path,
                    odd.line,
                    hint="the model will behave differently with and without it",
                )
            )
        else:
            ranked = sorted(s.systems.values(), key=lambda e: -e[0])
            if ranked[0][0] >= 0.5 * n:
                odd = min((e for e in ranked[1:]), key=lambda e: e[1].line)
                report.add(
                    Issue(
                        "warning",
                        "system_prompt",
                        f"{len(ranked)} different system "
                        f"prompts; {n - ranked[0][0]} examples differ from the most "
                        f"common one (first at line {odd[1].line})",
                        path,
                        odd[1].line,
                    )
                )
