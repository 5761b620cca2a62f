"""User-facing errors.

Anything a user can cause (a bad file, a bad flag, a missing model) raises a `TunesmithError`.
The CLI prints it on one line (plus an optional hint) and exits 2, never with a traceback.
Internal failures are ordinary exceptions and exit 1.
"""

from __future__ import annotations


class TunesmithError(Exception):
    """An error the user can fix. `where` names the file/line/field; `hint` says what to do."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class ModelError(TunesmithError):
    """A model could not be resolved or loaded."""


class DataError(TunesmithError):
    """A data file is unusable (bad JSON, wrong fields, mixed formats, ...)."""


class ConfigError(TunesmithError):
    """A run spec is invalid (unknown key, bad value)."""


class TrainingError(TunesmithError):
    """Training had to stop for a reason the user should see (non-finite loss, ...)."""


def where(path: object, line: int | None = None, field: str | None = None) -> str:
    """Format a location as `file:line: field` for error messages."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if field:
        text += f" [{field}]"
    return text
