"""User-facing errors.

Anything a user can cause (a bad file, a bad flag, a missing model) raises a `TunesmithError`.
The CLI prints it on one line (plus an optional hint) and exits 2, never with a traceback; the
server maps `code` and `param` onto OpenAI's error envelope
(`{"error": {"message", "type", "param", "code"}}`) with a 4xx status.
Internal failures are ordinary exceptions and exit 1.
"""

from __future__ import annotations


class TunesmithError(Exception):
    """An error the user can fix.

    `where` names the file/line/field; `hint` says what to do; `code` is a stable
    machine-readable identifier (OpenAI style, e.g. `invalid_training_file`); `param` names the
    request parameter or spec key at fault."""

    exit_code = 2
    default_code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        where: str | None = None,
        hint: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint
        self.code = code or self.default_code
        self.param = param

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class ModelError(TunesmithError):
    """A model could not be resolved or loaded."""

    default_code = "model_not_found"


class DataError(TunesmithError):
    """A data file is unusable (bad JSON, wrong fields, mixed formats, ...)."""

    default_code = "invalid_file"


class ConfigError(TunesmithError):
    """A run spec is invalid (unknown key, bad value)."""

    default_code = "invalid_config"


class TrainingError(TunesmithError):
    """Training had to stop for a reason the user should see (non-finite loss, ...)."""

    default_code = "training_failed"


def where(path: object, line: int | None = None, field: str | None = None) -> str:
    """Format a location as `file:line: field` for error messages."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if field:
        text += f" [{field}]"
    return text
