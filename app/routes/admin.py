"""Operator views for admins: a round trip through every pool's queue."""

from __future__ import annotations

import time

from fastapi import APIRouter
from pydantic import BaseModel

from app import task_client
from app.deps import AdminUser
from workers.core.errors import MedvoiceError
from workers.core.settings import POOLS

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class PoolPing(BaseModel):
    pool: str
    ok: bool
    worker: str | None = None
    round_trip_ms: float | None = None
    error: str | None = None


@router.get("/pools", response_model=list[PoolPing])
def ping_pools(_: AdminUser, timeout_s: float = 5.0) -> list[PoolPing]:
    """Send `<pool>.ping` to every queue at once and report who answered and how fast. A pool that does not
    answer is a row with its error; an unreachable queue is a 503 (broker_unavailable) for the whole call."""
    sent = {pool: task_client.send(f"{pool}.ping", expires_s=timeout_s) for pool in POOLS}
    out = []
    for pool, ping in sent.items():
        try:
            reply = task_client.wait(ping, timeout_s)
        except MedvoiceError as exc:  # a missing pool is a result to report, not a crash
            out.append(PoolPing(pool=pool, ok=False, error=f"{exc.code}: {exc}"))
            continue
        out.append(
            PoolPing(
                pool=pool,
                ok=reply["pool"] == pool,
                worker=reply["worker"],
                round_trip_ms=round((time.perf_counter() - ping.sent_at) * 1000, 1),
            )
        )
    return out
