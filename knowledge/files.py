"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

The new content is written to a temporary file in the target's own folder (so the rename stays on one
file system), which then replaces the target with os.replace. When the write fails the temporary file is
removed and the target is left as it was.

- `atomic_path(target)`: a context manager yielding the temporary path, for writers that want a path
  (soundfile, a streamed copy); the target is replaced when the block ends without an exception.
- `write_atomic(target, data)`: the same for bytes or text at hand.

The bottom layer (knowledge/) holds this so that workers/ and app/ can use it too.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path(target: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden name next to `target`: .<name>.<pid>.<random><suffix> (not created)."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


@contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to `target` to write to; on success it replaces `target`, on failure
    it is removed (`target` untouched). The folder is created when missing. The temporary file is created
    by the writer, so it gets the usual permissions (the umask's), as a plain write would."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target, suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(target: str | os.PathLike[str], data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write `data` (bytes, or text in `encoding`) to `target` atomically; returns the target's path."""
    target = Path(target)
    with atomic_path(target) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding=encoding)
    return target
