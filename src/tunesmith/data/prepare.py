"""From data files to tokenized training and validation examples, for the training loop.

`prepare_sft` runs the same validation `tunesmith data validate` runs (so the report a user saw
is the report training acted on), then splits, mixes and returns tokenized examples;
`prepare_preference` does the same for the preference pairs of DPO/ORPO (no mixing), and
`prepare_prompts` for the prompts of reinforcement fine-tuning (no mixing). It never
drops a row silently: by default any row error raises a `DataError` naming the first bad line;
with `skip_invalid=True` bad rows are left out *and listed in the report*, and
`report.rows_read == len(train) + len(validation) + report.rows_rejected + report.rows_dropped`
(rows dropped only by `dedupe`; mixed-in general examples are counted separately in
`report.stats["mix"]`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.config import DEFAULT_MAX_SEQ_LEN
from tunesmith.data.formats import (
    RowError,
    convert_row,
    detect_format,
    normalize_format,
    record_to_json,
    unknown_format_error,
)
from tunesmith.data.mixing import MixSource, count_for, sample_source
from tunesmith.data.quality import record_key
from tunesmith.data.readers import iter_rows
from tunesmith.data.records import Prompt, Record
from tunesmith.data.tokenize import TokenizedExample, TokenizedPair, tokenize_many
from tunesmith.data.validate import Issue, ValidationReport, validate
from tunesmith.errors import ConfigError, DataError
from tunesmith.events import Reporter


@dataclass
class PreparedData:
    train: list[TokenizedExample]
    validation: list[TokenizedExample]
    train_sha256: str
    validation_sha256: str | None
    report: ValidationReport


def read_records(path: Path, format: str | None = None) -> Iterator[Record]:
    """Canonical records of a file, in order; raises `DataError` (file:line, field) at the first
    bad row. Use `tunesmith.data.validate.validate` to collect every problem instead."""
    fmt = normalize_format(format)
    file_fmt: str | None = fmt
    first_line = None
    for row in iter_rows(Path(path)):
        if row.error is not None:
            raise RowError(row.code, row.error, row.source, row.field)
        detected = fmt or detect_format(row.obj)
        if detected is None:
            raise unknown_format_error(row.obj, row.source)
        if file_fmt is None:
            file_fmt, first_line = detected, row.source.line
        elif detected != file_fmt:
            raise RowError(
                "mixed_format",
                f"row is in format {detected} but the file is "
                f"{file_fmt} (from line {first_line}); a file must use one format",
                row.source,
            )
        yield convert_row(row.obj, file_fmt, row.source)


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic (seeded) split of range(n) into (train, validation), both in file order."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation fraction must be between 0 and 1, got {fraction}")
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise DataError(
            f"cannot hold out {fraction:.0%} of {n} examples and still train",
            hint="use a smaller fraction or more data",
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    val = sorted(order[:n_val])
    held = set(val)
    return [i for i in range(n) if i not in held], val


def heldout_split(keys: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """The seeded split of a training file's rows (given by their exact-duplicate keys,
    `quality.record_key`) into (train, held out), both in file order. It is `split_indices`,
    except that copies of one row stay together on the side of the first copy: held-out rows
    must never also be trained on. Training and the run's later comparison both cut the
    held-out part with this (`eval.compare.run_heldout`)."""
    _, val = split_indices(len(keys), fraction, seed)
    held = set(val)
    side: dict[str, bool] = {}
    for i, key in enumerate(keys):
        side.setdefault(key, i in held)
    val = [i for i, key in enumerate(keys) if side[key]]
    if not val or len(val) == len(keys):
        raise DataError(
            f"cannot hold out {fraction:.0%} of {len(keys)} examples without repeating "
            "training rows in validation (the file repeats its rows)",
            hint="give a separate validation file, or dedupe (data.dedupe: true)",
        )
    chosen = set(val)
    return [i for i in range(len(keys)) if i not in chosen], val


def records_sha256(records: Sequence[Record]) -> str:
    """SHA-256 of records as canonical JSONL (for a validation set cut from the training file)."""
    h = hashlib.sha256()
    for rec in records:
        h.update(json.dumps(record_to_json(rec), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _raise_for(report: ValidationReport, skip_invalid: bool) -> None:
    # With skip_invalid, bad rows are left out (and listed); a file that could not be read to
    # its end is never trained on in part.
    fatal = (
        [e for e in report.errors if e.line is None or e.code == "unreadable"]
        if skip_invalid
        else report.errors
    )
    if not fatal:
        return
    first = fatal[0]
    count = len(fatal) if skip_invalid else report.error_count
    more = f" ({count - 1} more; run `tunesmith data validate` to see all)" if count > 1 else ""
    field = f"{first.field}: " if first.field else ""
    raise DataError(f"{field}{first.message}{more}", where=first.where or None, hint=first.hint)


def prepare_sft(
    train: Path,
    tokenizer: Any,
    *,
    validation: Path | None = None,
    validation_fraction: float | None = None,
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
    truncate: bool = False,
    train_on: str = "assistant",
    seed: int = 0,
    mix: list[MixSource] | None = None,
    format: str | None = None,
    skip_invalid: bool = False,
    dedupe: bool = False,
    on_event: Reporter | None = None,
) -> PreparedData:
    """Validate, tokenize, split and mix the data of an SFT run (see the module docstring).
    A file that `supervised` cannot train on (preference pairs) fails first, naming the file
    and the method; `dedupe=True` drops exact repeats (each listed as a warning)."""
    if validation is not None and validation_fraction is not None:
        raise ConfigError("give either a validation file or a validation fraction, not both")
    report, state = validate(
        Path(train),
        tokenizer,
        validation=Path(validation) if validation else None,
        format=format,
        max_seq_len=max_seq_len,
        truncate=truncate,
        train_on=train_on,
        on_event=on_event,
        keep=True,
        method="supervised",
        dedupe=dedupe,
    )
    _raise_for_method(report, train)
    _raise_for(report, skip_invalid)
    train_ex, val_ex, val_sha = _split(state, report, validation, validation_fraction, seed)
    if mix:
        train_ex = train_ex + _mix_in(
            report, mix, len(train_ex), tokenizer, max_seq_len, train_on, seed
        )
    return PreparedData(train_ex, val_ex, report.files[0].sha256 or "", val_sha, report)


def _raise_for_method(report: ValidationReport, train: Path) -> None:
    """A file of the wrong kind for the method (pairs for SFT, chats for DPO) is one error
    naming the file, whatever its rows hold."""
    wrong = [e for e in report.errors if e.code == "method"]
    if wrong:
        raise DataError(wrong[0].message, where=str(train), hint=wrong[0].hint, param="data.train")


def _split(
    state: Any,
    report: ValidationReport,
    validation: Path | None,
    validation_fraction: float | None,
    seed: int,
) -> tuple[list[Any], list[Any], str | None]:
    """(train items, validation items, validation SHA-256) from what validation kept: the
    validation file's rows, or the seeded held-out split of the training file (copies of one
    row stay on one side), or no validation."""
    kept = state.kept["train"]
    train_recs = [rec for rec, _ in kept]
    train_items = [item for _, item in kept]
    if validation is not None:
        return train_items, [item for _, item in state.kept["validation"]], report.files[1].sha256
    if validation_fraction is None:
        return train_items, [], None
    keys = [record_key(rec) for rec in train_recs]
    keep_idx, val_idx = heldout_split(keys, validation_fraction, seed)
    val_sha = records_sha256([train_recs[i] for i in val_idx])
    return [train_items[i] for i in keep_idx], [train_items[i] for i in val_idx], val_sha


@dataclass
class PreparedPairs:
    """What `prepare_preference` hands training: tokenized pairs, split as SFT's are."""

    train: list[TokenizedPair]
    validation: list[TokenizedPair]
    train_sha256: str
    validation_sha256: str | None
    report: ValidationReport


def prepare_preference(
    train: Path,
    tokenizer: Any,
    *,
    method: str = "dpo",
    validation: Path | None = None,
    validation_fraction: float | None = None,
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
    truncate: bool = False,
    seed: int = 0,
    format: str | None = None,
    skip_invalid: bool = False,
    dedupe: bool = False,
    on_event: Reporter | None = None,
) -> PreparedPairs:
    """Validate, tokenize and split the preference pairs of a DPO/ORPO run, with the same
    report, errors and held-out split as `prepare_sft`. Each answer is the assistant turn after
    the prompt, through the SFT chat template, with loss positions exactly those of
    `train_on="last"`. A file of conversations fails first, naming the file and the method."""
    if validation is not None and validation_fraction is not None:
        raise ConfigError("give either a validation file or a validation fraction, not both")
    report, state = validate(
        Path(train),
        tokenizer,
        validation=Path(validation) if validation else None,
        format=format,
        max_seq_len=max_seq_len,
        truncate=truncate,
        train_on="last",
        on_event=on_event,
        keep=True,
        method=method,
        dedupe=dedupe,
    )
    _raise_for_method(report, train)
    _raise_for(report, skip_invalid)
    train_pairs, val_pairs, val_sha = _split(state, report, validation, validation_fraction, seed)
    return PreparedPairs(train_pairs, val_pairs, report.files[0].sha256 or "", val_sha, report)


@dataclass
class PromptExample:
    """A reinforcement prompt as training sees it: the ids the model continues, the messages
    (the grader's `item.messages`), the row's other fields (the grader's `item`), the line."""

    input_ids: list[int]
    messages: list[dict[str, Any]]
    item: dict[str, Any]
    source: Any = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class PreparedPrompts:
    """What `prepare_prompts` hands training: prompts, split as SFT's examples are."""

    train: list[PromptExample]
    validation: list[PromptExample]
    train_sha256: str
    validation_sha256: str | None
    report: ValidationReport


def prepare_prompts(
    train: Path,
    tokenizer: Any,
    *,
    validation: Path | None = None,
    validation_fraction: float | None = None,
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
    seed: int = 0,
    format: str | None = None,
    skip_invalid: bool = False,
    dedupe: bool = False,
    on_event: Reporter | None = None,
) -> PreparedPrompts:
    """Validate, tokenize and split the prompts of a reinforcement run (format `prompts`:
    OpenAI's `{"messages": [...], **item}` rows), with the same report, errors and held-out
    split as `prepare_sft`. A row that ends with an assistant turn is an error naming its line
    (the model writes the answer); prompts are never truncated."""
    from tunesmith.data.formats import message_dicts

    if validation is not None and validation_fraction is not None:
        raise ConfigError("give either a validation file or a validation fraction, not both")
    report, state = validate(
        Path(train),
        tokenizer,
        validation=Path(validation) if validation else None,
        format=format,
        max_seq_len=max_seq_len,
        truncate=False,
        train_on="last",
        on_event=on_event,
        keep=True,
        method="reinforcement",
        dedupe=dedupe,
    )
    _raise_for_method(report, train)
    _raise_for(report, skip_invalid)
    for role, kept in state.kept.items():
        state.kept[role] = [
            (rec, PromptExample(list(tok.input_ids), message_dicts(rec.messages), dict(rec.item),
                                rec.source))
            for rec, tok in kept
            if isinstance(rec, Prompt)
        ]  # fmt: skip
    train_p, val_p, val_sha = _split(state, report, validation, validation_fraction, seed)
    return PreparedPrompts(train_p, val_p, report.files[0].sha256 or "", val_sha, report)


def _mix_in(
    report: ValidationReport,
    mix: Sequence[Any],
    n_train: int,
    tokenizer: Any,
    max_seq_len: int,
    train_on: str,
    seed: int,
) -> list[TokenizedExample]:
    sources = [MixSource.coerce(m) for m in mix]
    total_ratio = sum(s.ratio for s in sources)
    if total_ratio >= 1.0:
        raise ConfigError(f"mix ratios add up to {total_ratio:.2f}; they must stay below 1")
    out: list[TokenizedExample] = []
    notes = []
    for src in sources:
        # Each source's share is of the final set: n_general / (n_train + all general) = ratio.
        k = count_for(total_ratio, n_train) * src.ratio / total_ratio
        k = round(k)
        sample = sample_source(src, k, seed)
        results = tokenize_many(
            sample.conversations,
            tokenizer,
            train_on=train_on,
            max_seq_len=max_seq_len,
            truncate=True,
        )
        added = [r for r in results if isinstance(r, TokenizedExample)]
        out.extend(added)
        notes.append(
            {
                "source": sample.source,
                "ratio": src.ratio,
                "requested": k,
                "added": len(added),
                "rows_seen": sample.rows_seen,
                "rows_skipped": sample.rows_skipped,
            }
        )
        if len(added) < k:
            report.add(
                Issue(
                    "warning",
                    "mix_short",
                    f"mix source gave {len(added)} of {k} "
                    "requested examples (others could not be tokenized)",
                    sample.source,
                )
            )
    report.stats["mix"] = notes
    return out
