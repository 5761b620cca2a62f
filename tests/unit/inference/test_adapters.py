"""Adapters of one base on one peft model: least recently used out, pinned and busy ones stay,
a dropped adapter leaves at its last release; the base weights are never copied."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from tunesmith.errors import ModelError
from tunesmith.inference.adapters import AdapterSet, batchable


@pytest.fixture
def base(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def storage_bytes(model) -> int:
    """Bytes of parameter storage, each storage counted once however many tensors share it."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        s = p.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def adapter_bytes(model, name: str) -> int:
    params = model.named_parameters()
    return sum(p.numel() * p.element_size() for n, p in params if f".{name}." in n)


def loaded(s: AdapterSet) -> set[str]:
    return set(getattr(s.model, "peft_config", {}))


def test_a_second_adapter_adds_only_its_own_weights(base, adapter_dirs) -> None:
    before = {p.data_ptr() for p in base.parameters()}
    base_bytes = storage_bytes(base)
    s = AdapterSet(base, lock=threading.Lock(), capacity=4)
    first = s.acquire(adapter_dirs[0])
    one = storage_bytes(s.model)
    second = s.acquire(adapter_dirs[1])
    two = storage_bytes(s.model)
    assert first != second and loaded(s) == {first, second}
    assert one == base_bytes + adapter_bytes(s.model, first)
    assert two == one + adapter_bytes(s.model, second)  # no second copy of the base
    assert adapter_bytes(s.model, second) < base_bytes / 10
    frozen = {p.data_ptr() for n, p in s.model.named_parameters() if "lora_" not in n}
    assert frozen == before  # the very same base tensors, wrapped in place
    assert s.model.get_base_model() is base


def test_least_recently_used_idle_adapter_goes(base, adapter_dirs) -> None:
    s = AdapterSet(base, lock=threading.Lock(), capacity=2)
    names = []
    for d in adapter_dirs[:2]:
        names.append(s.acquire(d))
        s.release(names[-1])
    s.release(s.acquire(adapter_dirs[0]))  # adapter 0 is now the most recently used
    third = s.acquire(adapter_dirs[2])
    assert loaded(s) == {names[0], third} and s.loaded() == [adapter_dirs[0], adapter_dirs[2]]
    s.release(third)
    again = s.acquire(adapter_dirs[1])  # evicted ones load again, under a new name
    assert again not in names and len(s) == 2


def test_pinned_and_busy_adapters_are_never_evicted(base, adapter_dirs) -> None:
    s = AdapterSet(base, lock=threading.Lock(), capacity=1)
    s.pin(adapter_dirs[0])
    pinned = s.acquire(adapter_dirs[0])
    s.release(pinned)
    busy = s.acquire(adapter_dirs[1])  # over capacity: pinned stays, busy stays
    assert loaded(s) == {pinned, busy}
    s.release(busy)  # idle now: the capacity applies again
    assert loaded(s) == {pinned}


def test_a_dropped_adapter_leaves_at_its_last_release(base, adapter_dirs) -> None:
    s = AdapterSet(base, lock=threading.Lock(), capacity=4)
    name = s.acquire(adapter_dirs[0])
    s.drop(adapter_dirs[0])
    assert name in loaded(s) and s.loaded() == []
    s.release(name)
    assert name not in loaded(s)


def test_unusable_adapters_are_model_errors(base, tmp_path: Path, dora_dir, adapter_dirs) -> None:
    assert batchable(adapter_dirs[0]) and not batchable(dora_dir)
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(adapter_dirs[0] / "adapter_config.json", broken / "adapter_config.json")
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    s = AdapterSet(base, lock=threading.Lock())
    with pytest.raises(ModelError, match="could not load the adapter"):
        s.acquire(broken)
    with pytest.raises(ModelError, match="unreadable adapter config"):
        batchable(tmp_path)
