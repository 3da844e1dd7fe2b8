"""Per-turn event streams and cancel flags on Redis.

Each turn has one Redis stream, `medvoice:turn:<turn_id>:events`, onto which the stages `emit` events in
order (the llm task one `sentence` event per sentence, the tts task one `audio` event per clip, then
`done` / `error` / `cancelled`); the gateway reads it with XREAD from the last id it saw. Every event type
and its fields are defined once, in workers/core/event_schema.py. Each event is stored as two fields: `type`
and `data` (JSON of the rest), so any client can read it.

A turn's cancel flag, `medvoice:turn:<turn_id>:cancel`, is set by a client stop or barge-in; the llm task
checks it between tokens (`CancelCheck`, which asks Redis at most every `interval_s`) and the tts task
before synthesising. Keys expire (`ttl_s`) so abandoned turns leave nothing behind.

Light module (redis + stdlib): the API process may import it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from functools import lru_cache
from typing import Any

import redis

from workers.core.event_schema import Event
from workers.core.settings import get_settings

PREFIX = "medvoice:turn:"
DEFAULT_TTL_S = 3600
MAX_STREAM_LEN = 10_000
BLOCK_STEP_MS = 4000
_TURN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def check_turn_id(turn_id: str) -> str:
    turn_id = str(turn_id)
    if not _TURN_ID.match(turn_id):
        from workers.core.errors import InputError

        raise InputError("turn_id must be 1-128 characters of [A-Za-z0-9_.:-]", {"field": "turn_id"})
    return turn_id


def stream_key(turn_id: str) -> str:
    return f"{PREFIX}{check_turn_id(turn_id)}:events"


def cancel_key(turn_id: str) -> str:
    return f"{PREFIX}{check_turn_id(turn_id)}:cancel"


@lru_cache(maxsize=8)
def _client_for(url: str) -> redis.Redis:
    # redis-py's pool notices a fork (pid check) and reconnects in the child.
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)


def client(url: str | None = None) -> redis.Redis:
    return _client_for(url or get_settings().redis_url)


def emit(turn_id: str, event: Event, r: redis.Redis | None = None, ttl_s: int = DEFAULT_TTL_S) -> str:
    """Append one event to the turn's stream; returns its stream id."""
    return _append(turn_id, event.type.value, event.data(), r, ttl_s)


def _append(turn_id: str, type_: str, data: dict[str, Any], r: redis.Redis | None, ttl_s: int) -> str:
    r = r or client()
    key = stream_key(turn_id)
    pipe = r.pipeline(transaction=False)
    pipe.xadd(
        key, {"type": type_, "data": json.dumps(data, ensure_ascii=False)}, maxlen=MAX_STREAM_LEN, approximate=True
    )
    pipe.expire(key, ttl_s)
    event_id, _ = pipe.execute()
    return event_id


def read(
    turn_id: str,
    after: str = "0-0",
    block_ms: int | None = None,
    count: int | None = None,
    r: redis.Redis | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Events after stream id `after` (exclusive), oldest first: [(id, {"type": ..., **data})]."""
    r = r or client()
    key = stream_key(turn_id)
    if block_ms is None:
        got = r.xread({key: after}, count=count)
    else:
        # Blocks in steps shorter than redis-py's 5 s socket timeout, which would otherwise end a longer
        # XREAD BLOCK with a TimeoutError; block_ms=0 waits without end, as in Redis.
        deadline = time.monotonic() + block_ms / 1000
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            step = BLOCK_STEP_MS if block_ms == 0 else max(1, min(BLOCK_STEP_MS, left_ms))
            got = r.xread({key: after}, count=count, block=step)
            if got or (block_ms and time.monotonic() >= deadline):
                break
    out: list[tuple[str, dict[str, Any]]] = []
    for _key, entries in got or []:
        for event_id, fields in entries:
            event = {"type": fields.get("type", "")}
            event.update(json.loads(fields.get("data") or "{}"))
            out.append((event_id, event))
    return out


def read_all(turn_id: str, r: redis.Redis | None = None) -> list[dict[str, Any]]:
    return [e for _, e in read(turn_id, r=r)]


def cancel(turn_id: str, r: redis.Redis | None = None, ttl_s: int = DEFAULT_TTL_S) -> None:
    (r or client()).set(cancel_key(turn_id), str(time.time()), ex=ttl_s)


def is_cancelled(turn_id: str, r: redis.Redis | None = None) -> bool:
    return bool((r or client()).exists(cancel_key(turn_id)))


def clear(turn_id: str, r: redis.Redis | None = None) -> None:
    (r or client()).delete(stream_key(turn_id), cancel_key(turn_id))


class CancelCheck:
    """Callable `() -> bool` for the token loop: asks Redis at most every `interval_s`, then latches."""

    def __init__(self, turn_id: str | None, interval_s: float = 0.05, r: redis.Redis | None = None) -> None:
        self.turn_id = turn_id
        self.interval_s = interval_s
        self._r = r
        self._next = 0.0
        self._cancelled = False
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        if self._cancelled or self.turn_id is None:
            return self._cancelled
        now = time.monotonic()
        if now >= self._next:
            with self._lock:
                self._next = now + self.interval_s
                self._cancelled = is_cancelled(self.turn_id, self._r)
        return self._cancelled
