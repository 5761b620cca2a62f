"""Shared pieces of the export package: its error type and the output-directory check.

Every exporter writes into `tunesmith.io.atomic_dir` (a temp directory beside the target,
renamed into place at the end), so an interrupted or failed export never leaves a directory
that looks finished; `check_out_dir` decides beforehand whether the target may be replaced.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.errors import TunesmithError


class ExportError(TunesmithError):
    """An export the user asked for cannot be done (bad input dir, unsupported model, ...)."""


def check_out_dir(out: Path, *, force: bool) -> None:
    """Refuse to overwrite a non-empty directory unless `force` is set (an empty one, or any
    with `force`, is replaced by the finished export)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"output directory {out} is not empty", hint="pass --force to replace it")
