"""Turns whose pipeline work was lost: a broker restarted without persistence, a worker killed past
acks_late's redelivery, a message dropped. Such a turn would say `queued` (or `generating`...) forever; the
reaper marks it `error` ("stalled: ...") and ends its event stream, so a client waiting on it is told.

A turn counts as stalled when its row has not changed for settings.consult_stall_after_s, which must be
longer than any stage may run (the default is twice the Celery hard time limit). Idempotent, so every API
process may run it (app/main.py runs it every consult_reap_interval_s); `medvoice reap-turns` runs it once.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from workers import metrics
from workers.core import events
from workers.core.db import session_scope
from workers.core.event_schema import Failed
from workers.core.records import Turn, TurnStatus, utcnow
from workers.core.settings import Settings

log = logging.getLogger("medvoice.reaper")
UNFINISHED = [s for s in TurnStatus if s not in (TurnStatus.done, TurnStatus.error)]


def stall_limit_s(settings: Settings) -> float:
    return settings.consult_stall_after_s or 2.0 * settings.task_time_limit_s


def reap(settings: Settings) -> list[str]:
    """Mark every stalled turn `error`; returns their ids."""
    limit = stall_limit_s(settings)
    cutoff = utcnow() - timedelta(seconds=limit)
    with session_scope(settings.resolved_database_url) as db:
        stalled = list(
            db.scalars(
                select(Turn)
                .where(Turn.status.in_(UNFINISHED), Turn.updated_at < cutoff)
                .with_for_update(skip_locked=True)
            )
        )
        reaped = []
        for turn in stalled:
            reason = f"stalled: no progress while {turn.status.value} for over {limit:.0f}s (its queued work was lost)"
            turn.status, turn.error = TurnStatus.error, reason
            reaped.append((turn.id, reason))
    for turn_id, reason in reaped:
        metrics.turn_ended("stalled", "turn_stalled")
        try:
            events.emit(turn_id, Failed(stage="reaper", code="turn_stalled", message=reason, http_status=504))
        except Exception as exc:  # noqa: BLE001 - the record says it; the stream may follow later
            log.warning("turn=%s reaped but its stream could not be told: %s", turn_id, type(exc).__name__)
    if reaped:
        log.warning("reaped %d stalled turns: %s", len(reaped), ", ".join(t for t, _ in reaped))
    return [t for t, _ in reaped]
