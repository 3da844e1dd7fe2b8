"""Operator views for admins: a round trip through every pool's queue."""

from __future__ import annotations

import time

from fastapi import APIRouter
from pydantic import BaseModel

from app.deps import AdminUser
from workers.settings import POOLS

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class PoolPing(BaseModel):
    pool: str
    ok: bool
    worker: str | None = None
    round_trip_ms: float | None = None
    error: str | None = None


@router.get("/pools", response_model=list[PoolPing])
def ping_pools(_: AdminUser, timeout_s: float = 5.0) -> list[PoolPing]:
    """Send `<pool>.ping` to every queue at once and report who answered and how fast."""
    from workers.celery_app import celery_app

    started = {pool: (time.perf_counter(), celery_app.send_task(f"{pool}.ping", expires=timeout_s)) for pool in POOLS}
    out = []
    for pool, (t0, result) in started.items():
        try:
            reply = result.get(timeout=timeout_s)
            out.append(PoolPing(pool=pool, ok=reply["pool"] == pool, worker=reply["worker"],
                                round_trip_ms=round((time.perf_counter() - t0) * 1000, 1)))
        except Exception as exc:  # noqa: BLE001 - a missing pool is a result to report, not a crash
            result.forget()
            out.append(PoolPing(pool=pool, ok=False, error=f"{type(exc).__name__}: no reply in {timeout_s}s"))
    return out
