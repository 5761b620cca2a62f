"""The LoRA adapters of one base model in memory: all on ONE peft model, least recently used out.

Why one peft model: vLLM, LoRAX and S-LoRA keep one copy of the frozen base weights and page
small adapters in and out of it; with peft that is `load_adapter(path, adapter_name=…)` on one
`PeftModel` (which wraps the base's layers in place, so the base weights are never copied) and
`delete_adapter` on eviction. Rows of a batch then pick their adapter by name (`adapter_names`,
see batch.py). Adapters in use by a request (`acquire` … `release`) and pinned ones are never
evicted; the capacity is a soft limit when every adapter is busy. Loading and deleting change
the model's layers, so they hold the model lock, which the scheduler holds for each forward.
Rows of different adapters run through `mixed` (multi_lora.py: the same sums as peft's mixed
batches, in three operations per layer) where it covers the adapters, else through peft's
`adapter_names`.

DoRA adapters are not served here (peft's mixed batches are for plain LoRA): the pool serves
them merged, as a model of their own.
"""

from __future__ import annotations

import itertools
import json
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

from tunesmith.errors import ModelError
from tunesmith.inference.loading import LOADING
from tunesmith.inference.multi_lora import MultiLora


def batchable(adapter_dir: Path) -> bool:
    """Whether an adapter can share batches with others on its base: plain LoRA, no DoRA."""
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable adapter config in {adapter_dir}: {exc}") from None
    return config.get("peft_type", "LORA") == "LORA" and not config.get("use_dora")


class AdapterSet:
    def __init__(self, base: Any, *, lock: threading.Lock, capacity: int = 8, fused: bool = True):
        self.model = base  # becomes the PeftModel when the first adapter loads
        self.fused = fused
        self.mixed: MultiLora | None = None  # the fused mixed-adapter path, once there is one
        self.lock = lock
        self.capacity = max(1, capacity)
        self._names: OrderedDict[str, str] = OrderedDict()  # adapter dir -> peft name, LRU first
        self._refs: dict[str, int] = {}
        self._pinned: set[str] = set()
        self._doomed: set[str] = set()  # dropped while in use: deleted at the last release
        self._meta = threading.Lock()
        self._gates: dict[str, threading.Lock] = {}
        self._ids = itertools.count()

    def __len__(self) -> int:
        return len(self._names)

    def loaded(self) -> list[Path]:
        return [Path(k) for k in self._names]

    @property
    def in_use(self) -> bool:
        return any(self._refs.values())

    def pin(self, adapter_dir: Path) -> None:
        self._pinned.add(str(adapter_dir))

    def acquire(self, adapter_dir: Path) -> str:
        """The peft name of the adapter in `adapter_dir`, loaded if need be; the caller holds it
        (no eviction) until `release(name)`."""
        key = str(adapter_dir)
        with self._meta:
            name = self._take(key)
            if name is not None:
                return name
            gate = self._gates.setdefault(key, threading.Lock())
        with gate:  # one load per adapter, however many requests wait for it
            with self._meta:
                name = self._take(key)
            if name is None:
                name = f"a{next(self._ids)}"
                self._load(adapter_dir, name)
                with self._meta:
                    self._names[key] = name
                    self._refs[name] = 1
                    victims = self._victims()
                self._delete(victims)
        return name

    def release(self, name: str) -> None:
        with self._meta:
            self._refs[name] = max(0, self._refs.get(name, 0) - 1)
            victims = self._victims()
        self._delete(victims)

    def drop(self, adapter_dir: Path) -> None:
        """Forget an adapter (its model was deleted): now if idle, else at its last release."""
        with self._meta:
            name = self._names.pop(str(adapter_dir), None)
            self._pinned.discard(str(adapter_dir))
            if name is not None:
                self._doomed.add(name)
            victims = self._victims()
        self._delete(victims)

    def _take(self, key: str) -> str | None:
        name = self._names.get(key)
        if name is not None:
            self._names.move_to_end(key)
            self._refs[name] = self._refs.get(name, 0) + 1
        return name

    def _victims(self) -> list[str]:
        """Names to delete now (called under `_meta`): dropped ones, then the least recently
        used idle, unpinned ones while over capacity."""
        out = [n for n in self._doomed if not self._refs.get(n)]
        self._doomed.difference_update(out)
        idle = [
            k for k, n in self._names.items() if not self._refs.get(n) and k not in self._pinned
        ]
        while len(self._names) > self.capacity and idle:
            out.append(self._names.pop(idle.pop(0)))
        for n in out:
            self._refs.pop(n, None)
        return out

    def _load(self, adapter_dir: Path, name: str) -> None:
        from peft import PeftModel

        device = next(self.model.parameters()).device
        try:
            with LOADING, self.lock, warnings.catch_warnings():  # LOADING first: loading.py
                warnings.simplefilter("ignore", FutureWarning)  # peft on newer transformers
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(
                        str(adapter_dir), adapter_name=name, is_trainable=False,
                        torch_device=str(device), local_files_only=True,
                    )  # fmt: skip
                else:
                    self.model = PeftModel.from_pretrained(
                        self.model, str(adapter_dir), adapter_name=name, is_trainable=False,
                        torch_device=str(device), local_files_only=True,
                    )  # fmt: skip
                self.model.eval()
                self._refresh()
        except MemoryError:
            raise
        except Exception as exc:
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ModelError(f"could not load the adapter {adapter_dir}: {line}") from None

    def _delete(self, names: list[str]) -> None:
        if not names:
            return
        with self.lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "adapter … was active, now …": nothing is active here
            for name in names:
                if name in getattr(self.model, "peft_config", {}):
                    self.model.delete_adapter(name)
            self._refresh()

    def _refresh(self) -> None:
        """The layers changed (under the model lock): the fused path rescans them."""
        if not self.fused or not hasattr(self.model, "peft_config"):
            return
        if self.mixed is None:
            self.mixed = MultiLora(self.model)
        else:
            self.mixed.refresh()
