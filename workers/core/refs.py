"""References to files under the data directory: what tasks take instead of megabytes through the broker.

A reference is a path relative to settings.data_dir (an absolute path is accepted only when it lies
inside it). Anything that escapes the data directory, is not a regular file, or is too large is refused
with a typed error the API maps to a 4xx. Pure stdlib: no model library.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from workers.core.errors import InputNotFound, InputTooLarge, InvalidReference
from workers.core.settings import Settings


def resolve_ref(settings: Settings, ref: str, max_bytes: int | None = None) -> Path:
    if not isinstance(ref, str) or not ref.strip() or "\x00" in ref or len(ref) > 1024:
        raise InvalidReference("a file reference must be a non-empty path string", {"field": "ref"})
    root = settings.data_dir.resolve()
    raw = Path(ref)
    if not raw.is_absolute() and ".." in PurePosixPath(ref.replace("\\", "/")).parts:
        raise InvalidReference("a file reference may not contain '..'", {"ref": ref})
    path = (raw if raw.is_absolute() else root / raw).resolve()
    if path != root and root not in path.parents:
        raise InvalidReference("the reference points outside the data directory", {"ref": ref})
    if not path.exists():
        raise InputNotFound("no file at this reference", {"ref": ref})
    if not path.is_file():
        raise InvalidReference("the reference is not a regular file", {"ref": ref})
    if max_bytes is not None:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputTooLarge(
                f"file of {size} bytes exceeds the limit of {max_bytes}",
                {"ref": ref, "bytes": size, "max_bytes": max_bytes},
            )
    return path


def to_ref(settings: Settings, path: Path) -> str:
    """The reference (data-dir relative, POSIX separators) of a file under the data directory."""
    return path.resolve().relative_to(settings.data_dir.resolve()).as_posix()


def force_offline() -> None:
    """Before a model library is imported in a worker: no hub look-ups, no telemetry, whatever the env says."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ[key] = "1"
    os.environ["ANONYMIZED_TELEMETRY"] = "False"
