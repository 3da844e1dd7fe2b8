"""Follow one turn's event stream from the API (async Redis): what a live session relays to its client."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis

from workers.core import events
from workers.core.errors import BrokerUnavailable
from workers.core.event_schema import TERMINAL, Event, decode


@dataclass
class Seen:
    id: str
    type: str
    data: dict[str, Any]
    event: Event | None  # None: a type this version does not know


STALLED = "stalled"


async def follow(
    redis_url: str,
    turn_id: str,
    after: str = "0-0",
    timeout_s: float = 600.0,
    idle_s: float | None = None,
    alive: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[Seen]:
    """Every event of the turn after `after`, in order, until a terminal one (done, error, cancelled) or the
    timeout. With `idle_s`, a stretch that long without any event ends it with a `stalled` marker: no worker
    took the turn's next stage. `alive()`, asked at each such stretch, tells a pool that is down from one that is
    up and busy with the queue ahead of the turn: while it says True the following goes on (the timeout still
    bounds it), since the turn will be served."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=30)
    key = events.stream_key(turn_id)
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if idle_s is not None and time.monotonic() - last > idle_s:
                if alive is not None and await alive():
                    last = time.monotonic()
                    continue
                yield Seen(after, STALLED, {"idle_s": idle_s}, None)
                return
            try:
                got = await r.xread({key: after}, count=100, block=1000 if idle_s else 5000)
            except redis.RedisError:
                # Redis gone: the session is told (an `error`), rather than its relay dying with the exception.
                data = {"code": BrokerUnavailable.code, "message": "the turn's event stream (Redis) is unavailable"}
                yield Seen(after, "error", data, None)
                return
            if got:
                last = time.monotonic()
            for _key, batch in got or []:
                for event_id, fields in batch:
                    after = event_id
                    type_ = fields.get("type") or "message"
                    try:
                        data = json.loads(fields.get("data") or "{}")
                    except ValueError:
                        data = {}
                    yield Seen(event_id, type_, data, decode(type_, data))
                    if type_ in TERMINAL:
                        return
    finally:
        await r.aclose()
