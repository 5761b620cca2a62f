"""Keep freed host memory for reuse instead of handing it back to the kernel after every op.

PyTorch's CPU allocator is plain malloc. glibc serves blocks above 128 KiB with a fresh
mmap and unmaps them on free, so every activation-sized tensor of a training step (a few MB
each, thousands per step) is born as untouched pages and pays a page fault per 4 KiB on its
first write. On the default model that was ~12 % of a CPU LoRA step, mostly in element-wise ops.
Raising glibc's mmap and trim thresholds keeps those blocks in the heap, where the next step
reuses them already mapped. Peak memory does not grow: the same blocks are reused, not added.

Only glibc (Linux) is tuned; elsewhere this is a no-op. TUNESMITH_KEEP_FREED_MEMORY=0 turns it
off (for example when a jemalloc/tcmalloc is preloaded, which does the same on its own).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum; larger blocks (logits) still use mmap
TRIM_THRESHOLD = 1024 * 1024 * 1024

_done = False


def keep_freed_memory() -> bool:
    """Tune glibc malloc for the training process (idempotent); True if it took effect."""
    global _done
    if not sys.platform.startswith("linux") or os.environ.get("TUNESMITH_KEEP_FREED_MEMORY") == "0":
        return False
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and friends: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    _done = ok
    return ok
