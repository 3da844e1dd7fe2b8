"""A live session following a turn tells a pool that is down from one that is busy: while the pools are up (the
session's `alive` check) a quiet stretch is waited out and the turn's events still arrive; once they are not,
the stretch ends in `stalled`. Real Redis."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from app.live.follow import STALLED, follow
from workers.core import events
from workers.core.event_schema import Done, Status


def test_a_busy_pool_is_waited_for_and_a_down_one_is_not(redis_url: str) -> None:
    turn_id = str(uuid.uuid4())
    checks: list[float] = []

    async def alive() -> bool:
        checks.append(time.monotonic())
        return True

    def late_worker() -> None:  # the turn's stage starts after several idle stretches
        time.sleep(2.6)
        events.emit(turn_id, Status(status="transcribing"))
        events.emit(turn_id, Done())

    async def run(check) -> list[str]:
        return [s.type async for s in follow(redis_url, turn_id, timeout_s=20, idle_s=0.6, alive=check)]

    threading.Thread(target=late_worker, daemon=True).start()
    t0 = time.monotonic()
    assert asyncio.run(run(alive)) == ["status", "done"]
    assert len(checks) >= 2 and time.monotonic() - t0 >= 2.5

    quiet = str(uuid.uuid4())

    async def down() -> bool:
        return False

    async def run_down() -> list[str]:
        return [s.type async for s in follow(redis_url, quiet, timeout_s=20, idle_s=0.6, alive=down)]

    t0 = time.monotonic()
    assert asyncio.run(run_down()) == [STALLED]
    assert time.monotonic() - t0 < 5
