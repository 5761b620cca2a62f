"""glibc malloc tuning for CPU training: applied on Linux, and can be switched off."""

from __future__ import annotations

import sys

import pytest

from tunesmith.train import host_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_keep_freed_memory_takes_effect_on_linux(monkeypatch):
    monkeypatch.delenv("TUNESMITH_KEEP_FREED_MEMORY", raising=False)
    assert host_memory.keep_freed_memory() is True
    assert host_memory.keep_freed_memory() is True  # idempotent


def test_switch_off_by_environment(monkeypatch):
    monkeypatch.setenv("TUNESMITH_KEEP_FREED_MEMORY", "0")
    assert host_memory.keep_freed_memory() is False
