"""Freed heap is handed back after tasks, at most every TRIM_INTERVAL_S (pages given back are faulted in again).

Measured in a fresh interpreter: what a test process allocated and freed before (other tests' threads and
buffers) changes where glibc puts new blocks, and so what a trim can give back."""

from __future__ import annotations

import pytest

from tests.conftest import fresh_interpreter
from workers.core import memory

PROBE = """
import ctypes, ctypes.util, json
from workers.core import memory

def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
# 200 MB in blocks below the mmap threshold, each followed by a small block that stays: freed, the big ones
# cannot merge into the heap's top, and they stay resident until trimmed
blocks, keep = [], []
for _ in range(3200):
    blocks.append(libc.malloc(64 * 1024))
    keep.append(libc.malloc(16))
    ctypes.memset(blocks[-1], 1, 64 * 1024)
for b in blocks:
    libc.free(b)
before = rss_kb()
first = memory.trim(force=True)
freed = before - rss_kb()
print(json.dumps([first, freed, memory.trim(), memory.trim(force=True)]))
"""


@pytest.mark.skipif(memory._malloc_trim() is None, reason="this C library has no malloc_trim (glibc only)")
def test_trim_returns_freed_heap_and_is_throttled() -> None:
    first, freed_kb, throttled, forced = out = fresh_interpreter(PROBE)
    assert first is True and freed_kb > 100 * 1024, out
    assert throttled is False  # just done
    assert forced is True
