"""Pre-flight validation: read a data file once, streaming, and report everything wrong with it.

Why: other tools drop rows they cannot render without a word, or fail an hour into training.
Here every row is accounted for — `rows_read == rows_ok + rows_rejected`, and every rejected
row has at least one error naming its file, line and field — before any training starts.

Memory stays bounded on multi-GB files: rows are read and tokenized in chunks and only running
statistics are kept (token-length arrays, 64-bit hashes for duplicate detection, small counters).
Content checks and their thresholds live in `tunesmith.data.quality`, the automatic
hyperparameters in `tunesmith.data.estimate`, the report classes in `tunesmith.data.report`.

JSON report (`tunesmith data validate --json`, `ValidationReport.to_dict()`); keys are stable:

    ok                  bool   true when the data is usable (no errors)
    settings            {model, max_seq_len, truncate, train_on, format, dedupe, method}
    files               list of {role ("train"|"validation"), path, format, sha256,
                                 rows_read, rows_ok, rows_rejected, rows_dropped, truncated}
    rows_read, rows_ok, rows_rejected, rows_dropped   totals over all files
                        (read = ok + rejected + dropped; only dedupe drops rows, each with a
                        `deduplicated` warning)
    errors              list of issues (at most MAX_STORED_ISSUES)
    warnings            list of issues (at most MAX_STORED_ISSUES)
    error_count, warning_count   totals, including issues not stored
    error_codes         {code: count} over all errors
    stats               {examples, kind ("sft"|"preference"|"prompt"),
                         messages {min, mean, p50, p95, max, sum},
                         tokens {total, prompt, trained: {min, mean, p50, p95, max, sum}} | null,
                         truncated, labels {label: count} | null,
                         mix [{source, ratio, requested, added, rows_seen, rows_skipped}]
                         (only in reports from prepare_sft with mixing)}
    hyperparameters     {epochs, examples_per_step, rows, batch_size, grad_accum,
                         steps_per_epoch, total_steps, learning_rate, adapter, packing,
                         max_seq_len} | null   (the trainer's `auto` rules; rows = packed rows)
    estimate            {train_tokens, seconds, flops_per_second, n_params, device} | null
    methods             {method: "usable" | why not} for every training method (supervised,
                        dpo, reinforcement): which methods can use this data

An issue is {severity ("error"|"warning"), code, path, line (null for file-level), field,
message, hint}. Error codes: unreadable (the file, or the rest of it from `line`, could not be
read), invalid_json, invalid_utf8, invalid_csv, not_object, unknown_format, mixed_format,
missing_key, unknown_key, bad_type, unknown_role, empty_content, no_assistant, role_order,
bad_weight, unsupported, identical_pair, special_token, template, too_long, overlap, too_few,
method (the method asked for cannot train on this data, or not yet).
Warning codes: duplicate (kept), deduplicated (dropped), truncated, boundary, near_duplicate,
conflicting_answers, short_answer, system_prompt, label_imbalance, mix_short, large_json.
`tunesmith data validate --json` also prints this shape when it cannot start (no such model,
bad option): ok false and one error with code `model`, `config` or `unreadable`.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from tunesmith.config import DEFAULT_MAX_SEQ_LEN
from tunesmith.data.estimate import add_estimates, count_parameters
from tunesmith.data.formats import (
    PREFERENCE_FORMATS,
    RowError,
    convert_row,
    detect_format,
    normalize_format,
    unknown_format_error,
)
from tunesmith.data.methods import method_type, methods_for, mismatch, usable_methods
from tunesmith.data.quality import (
    MIN_EXAMPLES,
    Stats,
    h64,
    is_label_task,
    near_key,
    normalize,
    observe,
    record_key,
    soft_checks,
    summary,
    texts_of,
)
from tunesmith.data.readers import (
    JSON_WHOLE_FILE_WARN_BYTES,
    Progress,
    RawRow,
    check_file,
    file_kind,
    iter_rows,
)
from tunesmith.data.records import Conversation, PreferencePair, Prompt, Record
from tunesmith.data.report import FileReport, Issue, ValidationReport
from tunesmith.data.tokenize import (
    TokenizedExample,
    TokenizedPair,
    check_train_on,
    tokenize_many,
    tokenize_preferences,
    tokenize_prompts,
)
from tunesmith.errors import ConfigError, DataError
from tunesmith.events import Reporter
from tunesmith.events import progress as progress_event

__all__ = [
    "FileReport",
    "Issue",
    "ValidationReport",
    "add_estimates",
    "check_options",
    "count_parameters",
    "file_sha256",
    "near_key",
    "record_key",
    "validate",
]

CHUNK = 512
MIN_SEQ_LEN = 8


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class _Pass:
    """State shared across the files of one validation (train, then validation)."""

    def __init__(
        self,
        report: ValidationReport,
        tokenizer: Any,
        max_seq_len: int | None,
        truncate: bool,
        train_on: str,
        keep: bool,
        dedupe: bool = False,
    ):
        self.report = report
        self.dedupe = dedupe
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.truncate = truncate
        self.train_on = train_on
        self.keep = keep
        # 64-bit content hash -> packed location (line * 2 + file: 0 train, 1 validation);
        # plain ints keep these at ~100 bytes per row however large the file.
        self.exact: dict[int, int] = {}
        self.near: dict[int, int] = {}
        self.prompts: dict[int, int] = {}  # prompt hash -> answer hash (high bits) + location
        self.paths: list[str] = []
        self.stats = Stats()
        self.val_lengths = array("i")  # token count of each usable validation example
        # (record, its tokenization): a TokenizedPair for preference pairs
        self.kept: dict[str, list[tuple[Record, Any]]] = {
            "train": [],
            "validation": [],
        }

    def loc(self, packed: int) -> str:
        return f"{self.paths[packed & 1]}:{packed >> 1}"


def _error(report: ValidationReport, exc: RowError) -> None:
    report.add(Issue.from_error(exc))


def _records(
    rows: Iterator[RawRow],
    fmt: str | None,
    frep: FileReport,
    report: ValidationReport,
    chat_as: str = "chat",
) -> Iterator[Record]:
    """Convert raw rows; report rows that fail (counting them) and yield the rest. `chat_as`:
    what a row with `messages` is read as (`prompts` for reinforcement: the two are never told
    apart by their keys)."""
    first_line: int | None = None
    rows = iter(rows)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except RowError as exc:  # the rest of the file cannot be read: say so, stop, count
            _error(report, exc)
            break
        except DataError as exc:
            _error(report, RowError("unreadable", exc.message, None, hint=exc.hint, path=frep.path))
            break
        frep.rows_read += 1
        if row.error is not None:
            _error(report, RowError(row.code, row.error, row.source, row.field))
            frep.rows_rejected += 1
            continue
        try:
            row_fmt = fmt
            if row_fmt is None:
                detected = detect_format(row.obj)
                if detected is None:
                    raise unknown_format_error(row.obj, row.source)
                if detected == "chat":
                    detected = chat_as
                if frep.format is None:
                    frep.format, first_line = detected, row.source.line
                elif detected != frep.format:
                    raise RowError(
                        "mixed_format",
                        f"row is in format {detected} but the file is {frep.format} "
                        f"(from line {first_line}); a file must use one format",
                        row.source,
                    )
                row_fmt = frep.format
            record = convert_row(row.obj, row_fmt, row.source)
        except RowError as exc:
            _error(report, exc)
            frep.rows_rejected += 1
            continue
        yield record


CHUNK_CHARS = 32 << 20  # a chunk of long rows is cut short: its text is held until tokenized


def _chars(rec: Record) -> int:
    if isinstance(rec, (Conversation, Prompt)):
        return sum(len(m.content) for m in rec.messages)
    return sum(len(m.content) for m in rec.prompt) + len(rec.chosen) + len(rec.rejected)


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    """Batches of at most `size` records and about CHUNK_CHARS characters, so memory stays
    bounded however long the rows are."""
    chunk: list[Record] = []
    chars = 0
    for r in records:
        chunk.append(r)
        chars += _chars(r)
        if len(chunk) >= size or chars >= CHUNK_CHARS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def _reader_progress(on_event: Reporter | None, path: Path, role: str) -> Progress | None:
    """The readers' byte count as `progress` events of phase `validate:<role>`."""
    if on_event is None:
        return None
    phase, text = f"validate:{role}", f"checking {path.name}"

    def step(done: int, total: int) -> None:
        on_event(progress_event(phase, done, total, text, unit="bytes"))

    return step


def _check_file(
    st: _Pass,
    path: Path,
    role: str,
    fmt: str | None,
    on_event: Reporter | None,
    chat_as: str = "chat",
) -> FileReport:
    report = st.report
    check_file(path)
    try:
        sha = file_sha256(path)
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc.strerror or exc}", where=str(path)) from None
    frep = FileReport(role, str(path), sha256=sha)
    st.paths.append(str(path))
    report.files.append(frep)
    if fmt is not None:
        frep.format = fmt
    if file_kind(path) == "json" and path.stat().st_size > JSON_WHOLE_FILE_WARN_BYTES:
        report.add(
            Issue(
                "warning",
                "large_json",
                f"a .json array is read into memory whole ({path.stat().st_size >> 20} MiB)",
                str(path),
                hint="convert it to JSONL (`tunesmith data convert`), which is streamed",
            )
        )
    progress = _reader_progress(on_event, path, role)
    rows = iter_rows(path, progress)
    for chunk in _chunks(_records(rows, fmt, frep, report, chat_as), CHUNK):
        fresh: list[Record] = []
        for rec in chunk:
            verdict = _dedupe(st, rec, role)
            if verdict == "rejected":
                frep.rows_rejected += 1
            elif verdict == "dropped":
                frep.rows_dropped += 1
            else:
                fresh.append(rec)
        results = _tokenize(st, fresh)
        for rec, tokenized in zip(fresh, results, strict=True):
            if isinstance(tokenized, RowError):
                _error(report, tokenized)
                frep.rows_rejected += 1
                continue
            res = _longer(tokenized)
            if isinstance(tokenized, TokenizedPair) and (
                tokenized.chosen.truncated or tokenized.rejected.truncated
            ):
                res = replace(res, truncated=True) if res is not None else res
            frep.rows_ok += 1
            at, line = (rec.source.path, rec.source.line) if rec.source else (None, None)
            if res is not None and res.truncated:
                frep.truncated += 1
                report.add(
                    Issue(
                        "warning",
                        "truncated",
                        f"example cut to max_seq_len {st.max_seq_len} tokens (--truncate)",
                        at,
                        line,
                        "messages",
                    )
                )
            if res is not None and res.retokenized:
                report.add(
                    Issue(
                        "warning",
                        "boundary",
                        "an earlier answer starts with "
                        "whitespace that merges with the template's newline; its "
                        "prompt tokens differ from inference by one token",
                        at,
                        line,
                        "messages",
                        "strip leading whitespace from assistant answers",
                    )
                )
            if role == "train":
                observe(st.stats, rec, res)
            elif res is not None:  # held-out sizes: the time estimate's validation share
                st.val_lengths.append(len(res.input_ids))
            if st.keep:
                st.kept[role].append((rec, tokenized))
    if progress is not None:  # the phase is over, whatever the reader last said
        size = path.stat().st_size
        progress(size, size)
    return frep


Tokenized = TokenizedExample | TokenizedPair


def _tokenize(st: _Pass, records: list[Record]) -> list[Tokenized | RowError | None]:
    """Each record tokenized as training will: a conversation by `train_on`, a preference pair
    as its two answers (`tokenize_preferences`), a prompt as what the model is fed before it
    answers (`tokenize_prompts`), in one batch per kind."""
    if st.tokenizer is None:
        return [None] * len(records)
    convs = [r for r in records if isinstance(r, Conversation)]
    pairs = [r for r in records if isinstance(r, PreferencePair)]
    prompts = [r for r in records if isinstance(r, Prompt)]
    done = iter(
        tokenize_many(
            convs,
            st.tokenizer,
            train_on=st.train_on,
            max_seq_len=st.max_seq_len,
            truncate=st.truncate,
        )
    )
    done_pairs = iter(
        tokenize_preferences(pairs, st.tokenizer, max_seq_len=st.max_seq_len, truncate=st.truncate)
    )
    done_prompts = iter(
        tokenize_prompts(prompts, st.tokenizer, max_seq_len=st.max_seq_len) if prompts else []
    )
    out: list[Tokenized | RowError | None] = []
    for r in records:
        if isinstance(r, Conversation):
            out.append(next(done))
        elif isinstance(r, Prompt):
            out.append(next(done_prompts))
        else:
            out.append(next(done_pairs))
    return out


def _longer(res: Tokenized | None) -> TokenizedExample | None:
    """What a row's statistics and warnings look at: a pair's longer sequence."""
    if isinstance(res, TokenizedPair):
        return res.chosen if len(res.chosen) >= len(res.rejected) else res.rejected
    return res


def _dedupe(st: _Pass, rec: Record, role: str) -> str | None:
    """Train/validation overlap is an error ("rejected"). An exact duplicate is a warning naming
    the first line: kept (a real data set may repeat short examples), or "dropped" with
    dedupe. Near-duplicates and one prompt with different answers are warnings."""
    src = rec.source
    assert src is not None
    here = src.line * 2 + (1 if role == "validation" else 0)
    key = h64(record_key(rec))
    first = st.exact.get(key)
    if first is not None:
        if role == "validation" and not first & 1:
            st.report.add(
                Issue(
                    "error",
                    "overlap",
                    f"this validation example also appears in the training data at {st.loc(first)}",
                    src.path,
                    src.line,
                    None,
                    "held-out data must not be trained on; remove it from one file",
                )
            )
            return "rejected"
        if st.dedupe:
            st.report.add(
                Issue(
                    "warning",
                    "deduplicated",
                    f"exact duplicate of line {first >> 1}: dropped (dedupe)",
                    src.path,
                    src.line,
                )
            )
            return "dropped"
        st.report.add(
            Issue(
                "warning",
                "duplicate",
                f"exact duplicate of line {first >> 1}: kept, so it is trained on more than once",
                src.path,
                src.line,
                None,
                "--dedupe (data.dedupe: true) drops repeats",
            )
        )
        return None
    st.exact[key] = here
    prompt, answer, _ = texts_of(rec)
    norm_prompt, norm_answer = normalize(prompt), normalize(answer)
    near = h64(norm_prompt + "\x00" + norm_answer)
    near_first = st.near.get(near)
    if near_first is not None:
        st.report.add(
            Issue(
                "warning",
                "near_duplicate",
                f"nearly identical to {st.loc(near_first)} (differs only in case, spacing or "
                "punctuation)",
                src.path,
                src.line,
            )
        )
    else:
        st.near[near] = here
    pkey = h64(norm_prompt)
    ahash = h64(norm_answer)
    seen = st.prompts.get(pkey)
    if seen is None:
        st.prompts[pkey] = (ahash << 40) | here
    elif seen >> 40 != ahash and near_first is None:
        st.report.add(
            Issue(
                "warning",
                "conflicting_answers",
                f"same prompt as {st.loc(seen & ((1 << 40) - 1))} but a different answer",
                src.path,
                src.line,
            )
        )
    return None


def check_options(
    *,
    format: str | None = None,
    train_on: str = "assistant",
    max_seq_len: int | None = DEFAULT_MAX_SEQ_LEN,
    path: Path | None = None,
    validation: Path | None = None,
) -> str | None:
    """Check the options (and that the files exist) before any slow work such as loading a
    tokenizer; returns the normalized format."""
    fmt = normalize_format(format)
    check_train_on(train_on)
    if max_seq_len is not None and (isinstance(max_seq_len, bool) or max_seq_len < MIN_SEQ_LEN):
        raise ConfigError(
            f"max_seq_len must be at least {MIN_SEQ_LEN} tokens, got {max_seq_len}",
            hint="the chat template alone takes several tokens; training's default is "
            f"{DEFAULT_MAX_SEQ_LEN}",
        )
    for p in (path, validation):
        if p is not None:
            check_file(Path(p))
    same = path is not None and validation is not None
    if same and Path(path).resolve() == Path(validation).resolve():  # type: ignore[arg-type]
        raise DataError(
            "the validation file is the training file",
            where=str(validation),
            hint="held-out data must be separate: `tunesmith data split` makes two files",
        )
    return fmt


def validate(
    path: Path,
    tokenizer: Any = None,
    *,
    validation: Path | None = None,
    format: str | None = None,
    max_seq_len: int | None = DEFAULT_MAX_SEQ_LEN,
    truncate: bool = False,
    train_on: str = "assistant",
    model: str | None = None,
    on_event: Reporter | None = None,
    keep: bool = False,
    min_examples: int = MIN_EXAMPLES,
    method: str | None = None,
    dedupe: bool = False,
) -> tuple[ValidationReport, _Pass]:
    """Validate `path` (and an optional validation file) in one streaming pass each.

    With a tokenizer, every conversation is rendered and tokenized exactly as training will
    (token counts, over-long rows); without one only structure is checked. `keep=True` also
    keeps the accepted records and their tokenization (for `prepare_sft`; a preference pair's
    is its `TokenizedPair`, for `prepare_preference`). Reading reports
    `progress` events (bytes read of each file) to `on_event`, in the phases `validate:train`
    and `validate:validation`. `report.methods` says what every training method makes of the
    data; with `method`, a method that cannot train on it (or not yet) is an error. Exact
    duplicates are warnings (kept); `dedupe=True` drops every repeat (`rows_dropped`, a
    warning per dropped line).
    """
    fmt = check_options(
        format=format,
        train_on=train_on,
        max_seq_len=max_seq_len,
        path=Path(path),
        validation=validation,
    )
    method = method_type(method) if method is not None else None
    report = ValidationReport(
        settings={
            "model": model,
            "max_seq_len": max_seq_len,
            "truncate": truncate,
            "train_on": train_on,
            "format": fmt or "auto",
            "dedupe": dedupe,
        }
    )
    st = _Pass(
        report,
        tokenizer,
        max_seq_len if tokenizer is not None else None,
        truncate,
        train_on,
        keep,
        dedupe,
    )
    chat_as = "prompts" if method == "reinforcement" else "chat"
    frep = _check_file(st, Path(path), "train", fmt, on_event, chat_as)
    unread = report.error_codes.get("unreadable", 0)
    if frep.rows_ok < min_examples and not unread:
        report.add(
            Issue(
                "error",
                "too_few",
                f"only {frep.rows_ok} usable examples; at least {min_examples} are needed",
                str(path),
                hint="a few hundred good examples is a better start",
            )
        )
    if validation is not None:
        vfmt = fmt
        vrep = _check_file(st, Path(validation), "validation", vfmt, on_event, chat_as)
        if frep.format and vrep.format and _kind(frep.format) != _kind(vrep.format):
            report.add(
                Issue(
                    "error",
                    "mixed_format",
                    f"validation file is {vrep.format} but the training file is {frep.format}",
                    str(validation),
                )
            )
    soft_checks(st.stats, report, str(path))
    _check_method(report, frep, method)
    order = {p: i for i, p in enumerate(st.paths)}

    def position(issue: Issue) -> tuple[int, int]:
        # file order, then line; file-level issues (no line) after that file's rows
        return order.get(issue.path or "", len(order)), issue.line or 1 << 62

    report.errors.sort(key=position)
    report.warnings.sort(key=position)
    s = st.stats
    kinds = s.kinds.most_common(1)
    report.stats = {
        "examples": len(s.messages),
        "kind": kinds[0][0] if kinds else None,
        "messages": summary(s.messages),
        "tokens": None
        if tokenizer is None or not s.total
        else {
            "total": summary(s.total),
            "prompt": summary(s.prompt),
            "trained": summary(s.trained),
        },
        "truncated": sum(f.truncated for f in report.files),
        "labels": dict(s.labels.most_common(20)) if is_label_task(s) else None,
    }
    return report, st


def _check_method(report: ValidationReport, frep: FileReport, method: str | None) -> None:
    """Say which methods can use the file; an error when the asked-for one cannot."""
    kind = _kind(frep.format) if frep.format else None
    report.methods = methods_for(kind)
    report.settings["method"] = method
    why = mismatch(kind, method) if method else None
    if why is None:
        return
    usable = usable_methods(kind)
    hint = (
        f"use method {' or '.join(usable)} for this file"
        if usable
        else "train on a file of conversations (messages with assistant answers) for now"
    )
    report.add(Issue("error", "method", why, frep.path, hint=hint))


def _kind(fmt: str) -> str:
    if fmt == "prompts":
        return "prompt"
    return "preference" if fmt in PREFERENCE_FORMATS else "sft"
