"""The child process of one export (server/exports.py): `python -m tunesmith.server.export_task
DIR`, where DIR is the export's own directory under the server's home. It reads what to export
from DIR/request.json (written by the server: a run directory, a format, a name), calls
`tunesmith.api.export_model` into DIR/out, reports progress to DIR/progress.json, and writes
DIR/result.json: the files and the one to download (the GGUF, or a zip of the merged model's
directory), or the user-facing error. Exit 0 on success, 2 on a user error, 1 on a bug.
"""

from __future__ import annotations

import os
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from tunesmith.io import atomic_write_json, read_json

PROGRESS_EVERY_S = 0.5


def zip_dir(src: Path, dest: Path) -> None:
    """`src`'s files in one zip (stored: safetensors do not compress), written under a temp name
    and renamed, so a half-written zip is never offered."""
    tmp = dest.with_name(f".{dest.name}.part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                zf.write(path, f"{dest.stem}/{path.relative_to(src)}")
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)


def run(work: Path) -> int:
    import logging
    import warnings

    from tunesmith import api
    from tunesmith.errors import TunesmithError

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # as the CLI: not the user's concern
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    request: dict[str, Any] = read_json(work / "request.json")
    last = [0.0]

    def on_event(event: Any) -> None:
        if event.kind != "progress" or time.monotonic() - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = time.monotonic()
        total = float(event.total or 100) or 100.0
        percent = round(100 * float(event.done or 0) / total)
        atomic_write_json(work / "progress.json", {"percent": percent, "message": event.message})

    try:
        result = api.export_model(
            request["source"],
            format=request["format"],
            out=work / "out",
            name=request["name"],
            quantize=request.get("quantize"),
            verify=bool(request.get("verify", True)),
            on_event=on_event,
        )
    except TunesmithError as exc:
        code = exc.code if exc.code not in (None, "invalid_request") else "export_failed"
        error = {"code": code, "message": str(exc)}
        atomic_write_json(work / "result.json", {"ok": False, "error": error})
        return 2
    files = [{"name": p.name, "bytes": p.stat().st_size} for p in result.files if p.is_file()]
    if result.format == "hf":
        atomic_write_json(work / "progress.json", {"percent": 99, "message": "zipping"})
        archive = work / f"{result.name}-hf-{result.quantize}.zip"
        zip_dir(result.out_dir, archive)
        download = {"name": archive.name, "path": archive.name, "bytes": archive.stat().st_size}
    else:
        main = result.main_file
        download = {"name": main.name, "path": f"out/{main.name}", "bytes": main.stat().st_size}
    rt = result.roundtrip.as_dict() if result.roundtrip is not None else None
    atomic_write_json(
        work / "result.json",
        {
            "ok": True,
            "name": result.name,
            "quantize": result.quantize,
            "files": files,
            "download": download,
            "roundtrip": rt,
            "notes": result.notes,
            "warnings": result.warnings,
            "seconds": round(result.seconds, 1),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
