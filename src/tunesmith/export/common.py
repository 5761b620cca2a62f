"""Shared pieces of the export package: its error type and the atomic output directory.

Every exporter writes into a temp directory beside the target and renames it into place at the
end, so an interrupted or failed export never leaves a directory that looks finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tunesmith.errors import TunesmithError


class ExportError(TunesmithError):
    """An export the user asked for cannot be done (bad input dir, unsupported model, ...)."""


def check_out_dir(out: Path, *, force: bool) -> None:
    """Refuse to overwrite a non-empty directory unless `force` is set."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"output directory {out} is not empty", hint="pass --force to replace it")


@contextmanager
def atomic_dir(out: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temp dir beside `out`; on success it replaces `out`, on failure it is removed."""
    out = Path(out)
    check_out_dir(out, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
