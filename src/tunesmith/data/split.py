"""Split a data file into training and validation files: deterministic, without overlap.

Why not a plain shuffle: a file with repeated rows would put copies on both sides, and the
validation loss would then measure memorisation. Rows are grouped by their content with case,
spacing and punctuation folded away (so exact and near duplicates group together), and whole
groups are assigned to one side, chosen by a seeded shuffle until the validation side holds
`round(n * fraction)` rows (give or take a group).
Same file + same seed → same split, on any machine.

JSONL inputs are split losslessly: each output line is the input line byte for byte. Other
formats (JSON array, CSV, Parquet) are written as canonical chat JSONL. Both outputs are written
to temp files and renamed only when both are complete.
"""

from __future__ import annotations

import json
import random
from array import array
from dataclasses import dataclass
from pathlib import Path

from tunesmith.data.convert import check_output, output_file, raise_if_errors
from tunesmith.data.formats import normalize_format, record_to_json
from tunesmith.data.readers import _open_binary, file_kind, iter_rows
from tunesmith.data.validate import FileReport, ValidationReport, _records, near_key
from tunesmith.errors import ConfigError, DataError


@dataclass
class SplitResult:
    train_path: Path
    validation_path: Path
    train_rows: int
    validation_rows: int
    seed: int


def default_outputs(src: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    name = src.name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".pq"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    base = out_dir or src.parent
    return base / f"{name}.train.jsonl", base / f"{name}.val.jsonl"


def choose_validation(keys: array, fraction: float, seed: int) -> set[int]:
    """Row indices for validation: whole duplicate groups, seeded, about `fraction` of rows."""
    groups: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    n = len(keys)
    target = max(1, round(n * fraction))
    order = sorted(groups)  # sorted first so the shuffle does not depend on dict order
    random.Random(seed).shuffle(order)
    chosen: set[int] = set()
    for key in order:
        if len(chosen) >= target:
            break
        members = groups[key]
        if len(chosen) + len(members) > target and chosen:
            continue  # a big duplicate group would overshoot; try a smaller one
        chosen.update(members)
    if len(chosen) >= n:
        raise DataError(
            f"cannot hold out {fraction:.0%} of {n} rows and keep any for training",
            hint="use a smaller --val fraction or more data",
        )
    return chosen


def split_file(
    src: Path,
    *,
    fraction: float = 0.1,
    seed: int = 0,
    train_out: Path | None = None,
    validation_out: Path | None = None,
    format: str | None = None,
) -> SplitResult:
    """Write `src` as a training file and a validation file (see the module docstring)."""
    if not 0.0 < fraction < 1.0:
        percent = 1.0 < fraction < 100.0
        raise ConfigError(
            f"--val must be a fraction between 0 and 1 (exclusive), got {fraction:g}",
            hint=f"did you mean --val {fraction / 100:g}?"
            if percent
            else "e.g. --val 0.1 holds out 10 %",
        )
    src = Path(src)
    default_train, default_val = default_outputs(src)
    train_out = Path(train_out or default_train)
    validation_out = Path(validation_out or default_val)
    check_output(train_out, (src,), "the training output")
    check_output(validation_out, (src,), "the validation output")
    if train_out.resolve() == validation_out.resolve():
        raise DataError(
            "the training and the validation output are the same file",
            where=str(train_out),
            hint="give --train-out and --val-out different names",
        )
    fmt = normalize_format(format)
    report = ValidationReport(settings={})
    frep = FileReport("input", str(src), format=fmt)
    report.files.append(frep)
    keys = array("Q")
    lines = array("Q")
    for rec in _records(iter_rows(src), fmt, frep, report):
        keys.append(near_key(rec))
        lines.append(rec.source.line)  # type: ignore[union-attr]
    raise_if_errors(report)
    if len(keys) < 2:
        raise DataError(f"only {len(keys)} row(s); nothing to split", where=str(src))
    val_idx = choose_validation(keys, fraction, seed)
    n_val = n_train = 0
    with output_file(train_out) as ft, output_file(validation_out) as fv:
        if file_kind(src) == "jsonl":
            # JSONL lines are unique row ids: copy each line byte for byte.
            val_lines = {lines[i] for i in val_idx}
            with _open_binary(src) as f:
                for number, raw in enumerate(f, start=1):
                    if not raw.strip():
                        continue
                    text = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
                    target = fv if number in val_lines else ft
                    target.write(text + "\n")
        else:
            # Several elements of a JSON array can share a line: go by position instead.
            again = _records(iter_rows(src), frep.format, FileReport("", ""), report)
            for i, rec in enumerate(again):
                target = fv if i in val_idx else ft
                target.write(json.dumps(record_to_json(rec), ensure_ascii=False, default=str))
                target.write("\n")
    n_val = len(val_idx)
    n_train = len(keys) - n_val
    return SplitResult(train_out, validation_out, n_train, n_val, seed)
