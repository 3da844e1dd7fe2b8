"""Handing freed heap back to the system after each task.

glibc's malloc keeps the memory a task freed (a long transcription's buffers, an ingest batch's activations)
for the process to reuse, so a pool process's RSS stays at the peak of the biggest task it ever ran:
`malloc_trim` returns the free pages. It takes ~0.1 ms when there is nothing to return and a few ms after a
big task, and runs after the task's result is stored; at most every TRIM_INTERVAL_S, because pages given back
are faulted in again by the next task, and a busy live pool runs several tasks a second. Elsewhere than glibc
it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from functools import lru_cache
from typing import Any

TRIM_INTERVAL_S = 10.0
_last = {"at": float("-inf")}
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None


def trim(force: bool = False) -> bool:
    """Return freed heap pages to the system, unless that was done less than TRIM_INTERVAL_S ago (or `force`);
    whether it ran."""
    fn = _malloc_trim()
    if fn is None:
        return False
    with _lock:
        now = time.monotonic()
        if not force and now - _last["at"] < TRIM_INTERVAL_S:
            return False
        _last["at"] = now
    fn(0)
    return True
