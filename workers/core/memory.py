"""Handing freed heap back to the system after each task.

glibc's malloc keeps the memory a task freed (a long transcription's buffers, an ingest batch's activations)
for the process to reuse, so a pool process's RSS stays at the peak of the biggest task it ever ran:
`malloc_trim` returns the free pages. It takes ~0.1 ms when there is nothing to return and a few ms after a
big task, and runs after the task's result is stored. Elsewhere than glibc it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None


def trim() -> bool:
    """Return freed heap pages to the system; False where the C library cannot."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True
