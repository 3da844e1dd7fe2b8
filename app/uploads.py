"""Reading an upload without trusting its size: the limits shared by every route that takes an audio file.

`body_limited` counts the request body as it arrives (a chunked upload with no Content-Length that goes
past the limit stops with InputTooLarge instead of being spooled to disk whole); `read_upload` reads one
multipart file part up to a limit. Both raise the typed InputTooLarge (413) of workers/core/errors.py.
`store_upload` writes an accepted upload where the workers will read it; a full disk is StorageFull (507).
"""

from __future__ import annotations

import errno
from pathlib import Path

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.types import Message

from knowledge.files import write_atomic
from workers.core.errors import InputTooLarge, MedvoiceError

# Room for the multipart framing and the small form fields beside the file part.
MULTIPART_OVERHEAD = 64 * 1024


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await upload.read(1024 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise InputTooLarge(f"audio larger than the limit of {limit} bytes", {"max_bytes": limit})
        chunks.append(chunk)
    return b"".join(chunks)


def body_limited(request: Request, limit: int) -> Request:
    """The same request, reading its body through a counter: a chunked upload (no Content-Length) that
    goes past `limit` stops with 413 instead of being spooled to disk whole."""
    seen = 0

    async def receive() -> Message:
        nonlocal seen
        message = await request.receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise InputTooLarge(f"upload larger than the limit of {limit} bytes", {"max_bytes": limit})
        return message

    return Request(request.scope, receive)


class StorageFull(MedvoiceError):
    """The data directory has no room for the upload: nothing was kept, the request can be sent again later."""

    code = "insufficient_storage"
    http_status = 507


def store_upload(path: Path, data: bytes) -> Path:
    """Write atomically (a temporary file, then a rename): a worker never reads a half-written upload, and a
    write the disk cannot hold leaves nothing behind (the temporary file goes with the failure)."""
    try:
        return write_atomic(path, data)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise StorageFull("the data directory is full: the upload was not stored", {"bytes": len(data)}) from None
