"""A turn's SSE stream outlives a quiet stage longer than redis-py's default 5 s socket timeout: the blocking
XREAD between heartbeats must not be cut off (a 20 s LLM stage used to end the stream with a TimeoutError)."""

from __future__ import annotations

import asyncio
import time
import uuid

from workers.core import events
from workers.core.event_schema import Done
from workers.core.settings import Settings


def test_sse_waits_longer_than_the_default_socket_timeout(redis_url: str):
    from app.routes.turns import _event_stream

    settings = Settings(redis_url=redis_url, consult_sse_heartbeat_s=6.0, consult_sse_timeout_s=60.0)
    turn_id = f"t-{uuid.uuid4().hex}"

    async def follow() -> list[str]:
        stream = _event_stream(turn_id, "0-0", None, settings)
        got = [await stream.__anext__()]  # retry:
        t0 = time.monotonic()
        got.append(await stream.__anext__())  # nothing for 6 s: a keep-alive, not an exception
        assert time.monotonic() - t0 >= 5.5
        events.emit(turn_id, Done(status="done"), r=events.client(redis_url))
        got.append(await stream.__anext__())
        await stream.aclose()
        return got

    out = asyncio.run(follow())
    assert out[0].startswith("retry:") and out[1] == ": keep-alive\n\n"
    assert "event: done" in out[2]
