"""Measured training speed on this machine, remembered for the next time estimate.

A matmul probe (`tunesmith.auto.measure_flops`) predicts a first run's time only roughly: how
close a training step gets to the probe's FLOP/s depends on the CPU, the sequence lengths and
the precision. Every finished training run records what it measured — tokens per second of
its steps and seconds per validated token — under `$TUNESMITH_HOME/cache/speed.json`, keyed by
this machine (models/precision.machine_key), the model's size, the adapter, the device and the
precision. `tunesmith data validate` then estimates from that measurement and says so.
A cache that cannot be read or written is only a missed shortcut.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_ENTRIES = 200


@dataclass
class Speed:
    tokens_per_s: float  # row tokens (prompt and answer) per second of training steps
    val_tokens_per_s: float | None  # held-out tokens per second of validation
    when: str
    steps: int

    def describe(self) -> str:
        return f"measured by a run on this machine ({self.when}, {self.steps} steps)"


def _cache_file() -> Path:
    from tunesmith.models.registry import tunesmith_home

    return tunesmith_home() / "cache" / "speed.json"


def speed_key(n_params: int, adapter: str, device: str, precision: str, seq: int) -> str:
    """Machine, base model size (2 digits: the same model however it was named or stored),
    adapter, device,
    precision and the row length in powers of two (attention's share grows with it)."""
    from tunesmith.models.precision import machine_key

    size = f"{n_params:.1e}"
    bucket = 1 << max(0, (max(1, seq) - 1).bit_length())
    return f"{machine_key()}|{size}|{adapter}|{device}|{precision}|{bucket}"


def _read() -> dict[str, Any]:
    try:
        entries = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def lookup(key: str) -> Speed | None:
    hit = _read().get(key)
    try:
        if isinstance(hit, dict) and float(hit["tokens_per_s"]) > 0:
            val = hit.get("val_tokens_per_s")
            return Speed(
                tokens_per_s=float(hit["tokens_per_s"]),
                val_tokens_per_s=float(val) if val else None,
                when=str(hit.get("when", "?")),
                steps=int(hit.get("steps", 0)),
            )
    except (KeyError, TypeError, ValueError):
        return None
    return None


def record(key: str, *, tokens_per_s: float, val_tokens_per_s: float | None, steps: int) -> None:
    """Remember a run's speed (the newest measurement of a key wins)."""
    from tunesmith.io import atomic_write_json

    if not tokens_per_s > 0:
        return
    entries = _read()
    entries.pop(key, None)
    entries[key] = {
        "tokens_per_s": round(tokens_per_s, 2),
        "val_tokens_per_s": round(val_tokens_per_s, 2) if val_tokens_per_s else None,
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "steps": steps,
    }
    while len(entries) > MAX_ENTRIES:  # oldest first (dicts keep insertion order)
        entries.pop(next(iter(entries)))
    try:
        path = _cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, entries, indent=1)
    except OSError:
        pass
