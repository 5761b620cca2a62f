"""The validation report's data model: files, issues (errors / warnings), stats, estimates.

Kept apart from the streaming pass so that the CLI, the API and the server can use the report
without importing the pass. The JSON keys (`to_dict()`) are stable; they are documented in
`tunesmith.data.validate`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from tunesmith.data.formats import RowError

MAX_STORED_ISSUES = 10_000


@dataclass
class Issue:
    severity: str
    code: str
    message: str
    path: str | None = None
    line: int | None = None
    field: str | None = None
    hint: str | None = None

    @property
    def where(self) -> str:
        text = self.path or ""
        if self.line is not None:
            text += f":{self.line}"
        return text

    def __str__(self) -> str:
        field_ = f" [{self.field}]" if self.field else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{self.where}{field_}: {self.message}{hint}"

    @classmethod
    def from_error(cls, exc: RowError, severity: str = "error") -> Issue:
        return cls(severity, exc.code, exc.reason, exc.path, exc.line, exc.field, exc.hint)


@dataclass
class FileReport:
    role: str
    path: str
    format: str | None = None
    sha256: str | None = None
    rows_read: int = 0
    rows_ok: int = 0
    rows_rejected: int = 0
    rows_dropped: int = 0  # exact duplicates dropped by dedupe (read = ok + rejected + dropped)
    truncated: int = 0


@dataclass
class ValidationReport:
    """Everything `tunesmith data validate` prints; see the module docstring for the JSON."""

    settings: dict[str, Any]
    files: list[FileReport] = field(default_factory=list)
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    error_count: int = 0
    warning_count: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] | None = None
    estimate: dict[str, Any] | None = None
    # every training method and what it makes of this data: "usable", or why not
    methods: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def rows_ok(self) -> int:
        return sum(f.rows_ok for f in self.files)

    @property
    def rows_rejected(self) -> int:
        return sum(f.rows_rejected for f in self.files)

    @property
    def rows_dropped(self) -> int:
        return sum(f.rows_dropped for f in self.files)

    def add(self, issue: Issue) -> None:
        if issue.severity == "error":
            self.error_count += 1
            self.error_codes[issue.code] = self.error_codes.get(issue.code, 0) + 1
            if len(self.errors) < MAX_STORED_ISSUES:
                self.errors.append(issue)
        else:
            self.warning_count += 1
            if len(self.warnings) < MAX_STORED_ISSUES:
                self.warnings.append(issue)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "settings": self.settings,
            "files": [asdict(f) for f in self.files],
            "rows_read": self.rows_read,
            "rows_ok": self.rows_ok,
            "rows_rejected": self.rows_rejected,
            "rows_dropped": self.rows_dropped,
            "errors": [asdict(e) for e in self.errors],
            "warnings": [asdict(w) for w in self.warnings],
            "error_count": self.error_count,
            "warning_count": self.warning_count,
            "error_codes": dict(sorted(self.error_codes.items())),
            "stats": self.stats,
            "methods": self.methods,
            "hyperparameters": self.hyperparameters,
            "estimate": self.estimate,
        }

    def to_json(self, *, ensure_ascii: bool = False) -> str:
        # default=str: metadata from Parquet can hold dates or bytes; NaN never gets here
        # (the readers refuse it), so the output is always strict JSON.
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=ensure_ascii, default=str)
