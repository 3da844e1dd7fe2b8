"""Handing freed heap back to the system after each task.

glibc's malloc keeps the memory a task freed (a long transcription's buffers, an ingest batch's activations)
for the process to reuse, so a pool process's RSS stays at the peak of the biggest task it ever ran:
`malloc_trim` returns the free pages. It takes ~0.1 ms when there is nothing to return and a few ms after a
big task, and runs after the task's result is stored; at most every TRIM_INTERVAL_S, because pages given back
are faulted in again by the next task, and a busy live pool runs several tasks a second. A trim skipped for
that reason runs once the interval is over, on a timer thread, so a pool that goes quiet after a burst gives
its peak back instead of holding it until its next task. Elsewhere than glibc it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from functools import lru_cache
from typing import Any

TRIM_INTERVAL_S = 10.0
_last = {"at": float("-inf")}
_lock = threading.Lock()
_deferred: list[threading.Timer] = []  # the one pending trim, if any


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
            if not _deferred:
                timer = threading.Timer(TRIM_INTERVAL_S - (now - _last["at"]), _deferred_trim)
                timer.daemon = True
                _deferred.append(timer)
                timer.start()
            return False
        _last["at"] = now
    fn(0)
    return True


def _forget_timer_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a forked child has no timer thread, and no thread that might hold the lock
    _deferred.clear()


os.register_at_fork(after_in_child=_forget_timer_in_child)


def _deferred_trim() -> None:
    with _lock:
        _deferred.clear()
    trim()


def pending() -> bool:
    """Whether a skipped trim is waiting for its interval to end."""
    with _lock:
        return bool(_deferred)
