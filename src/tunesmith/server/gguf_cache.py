"""Which GGUF file llama.cpp serves a target from: the shipped one, or an export made once.

The serving pool (inference/pool.py) asks `GgufCache(target)` before it loads a target; a path
means "serve it through llama.cpp" (inference/llamacpp.py), None means "serve it with torch".
- A base model that is a GGUF (the default model's alias, a .gguf file the operator listed):
  its own file, as it ships.
- A fine-tune (a run, a checkpoint `RUN@step-N`, an adapter or model directory): merged and
  exported once (`tunesmith.api.export_model`, `serve_gguf_quantize`, q8_0 by default) into
  `$TUNESMITH_HOME/cache/gguf/KEY/`, KEY a digest of the weights' file names, sizes and times
  and of the quantisation; written into a temporary folder and renamed into place, under a
  file lock, so two servers or two requests export it once and nobody reads half a file.
- Anything the exporter cannot write (an architecture GGUF has no mapping for here, a hub id)
  stays on torch: the reason is logged once, the request is served all the same.
Which targets get here at all is the operator's `serve_engine` (service.py): `torch` never asks.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import tempfile
import threading
from pathlib import Path

from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith.server")


class GgufCache:
    def __init__(self, home: Path, quantize: str = "q8_0"):
        self.root = home / "cache" / "gguf"
        self.quantize = quantize
        self._failed: set[str] = set()  # targets that stay on torch (logged once)
        self._lock = threading.Lock()

    def __call__(self, target: str) -> Path | None:
        from tunesmith.models.registry import resolve

        if target in self._failed:
            return None
        try:
            ref = resolve(target)
            if ref.kind in ("alias", "gguf") and ref.source is not None:
                return ref.source
            weights = ref.adapter if ref.kind == "adapter" else ref.path
            if ref.kind == "hub" or weights is None or not weights.is_dir():
                self._stay(target, "not a local model")
                return None
            return self._export(target, weights)
        except TunesmithError as exc:
            self._stay(target, exc.message)
            return None

    def _stay(self, target: str, why: str) -> None:
        with self._lock:
            if target not in self._failed:
                self._failed.add(target)
                log.info("serving %s with torch, not llama.cpp: %s", target, why)
        return None

    def key(self, target: str, weights: Path) -> str:
        """Digest of what the export is made of: the target's weights files (name, size, mtime)
        and the quantisation."""
        h = hashlib.sha256(f"{self.quantize}\n{target}\n".encode())
        for f in sorted(p for p in weights.rglob("*") if p.is_file()):
            st = f.stat()
            h.update(f"{f.relative_to(weights)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:24]

    def _export(self, target: str, weights: Path) -> Path:
        from tunesmith import api

        folder = self.root / self.key(target, weights)
        found = _gguf_in(folder)
        if found is not None:
            return found
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one export at a time, across processes too
            found = _gguf_in(folder)
            if found is not None:
                return found
            tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=self.root))
            try:
                log.info("exporting %s as %s GGUF for llama.cpp", target, self.quantize)
                api.export_model(
                    target, format="gguf", quantize=self.quantize, out=tmp / "out", verify=False
                )
                tmp.rename(folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        found = _gguf_in(folder)
        if found is None:
            raise TunesmithError(f"the export of {target} wrote no .gguf file")
        return found


def _gguf_in(folder: Path) -> Path | None:
    files = sorted(folder.rglob("*.gguf")) if folder.is_dir() else []
    return files[0] if files else None
