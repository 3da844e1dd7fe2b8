"""Freed heap is handed back after tasks, at most every TRIM_INTERVAL_S (pages given back are faulted in again)."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from workers.core import memory


@pytest.mark.skipif(memory._malloc_trim() is None, reason="this C library has no malloc_trim (glibc only)")
def test_trim_returns_freed_heap_and_is_throttled() -> None:
    def rss_kb() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # 200 MB in blocks below the mmap threshold, each followed by a small block that stays: freed, the big
    # ones cannot merge into the heap's top, and they stay resident until trimmed
    blocks, keep = [], []
    for _ in range(3200):
        blocks.append(libc.malloc(64 * 1024))
        keep.append(libc.malloc(16))
        ctypes.memset(blocks[-1], 1, 64 * 1024)
    for b in blocks:
        libc.free(b)
    before = rss_kb()
    assert memory.trim(force=True)
    assert before - rss_kb() > 100 * 1024
    assert not memory.trim()  # just done
    assert memory.trim(force=True)
    for k in keep:
        libc.free(k)
