"""finish: the end of a turn that is read, not spoken (a chat completion): totals on the record, status done,
then `done` on its stream. The answer was recorded by the llm stage; there is no reply audio."""

from __future__ import annotations

import logging
from datetime import UTC

from workers.core import events
from workers.core.db import session_scope
from workers.core.errors import InputError
from workers.core.event_schema import Done
from workers.core.records import Turn, TurnStatus, utcnow
from workers.pipeline.contracts import Answered, Spoken
from workers.pipeline.stage import FINISHED, Context, StageSkipped, db_url

log = logging.getLogger("medvoice.tasks.turns")


def finish(_turn: None, answered: Answered, _ctx: Context) -> Spoken:
    with session_scope(db_url()) as db:
        turn = db.get(Turn, answered.turn_id)
        if turn is None:
            raise InputError("no such turn", {"turn_id": answered.turn_id})
        if turn.status in FINISHED:
            raise StageSkipped(turn.status.value)  # a re-delivered finish: the stream ended already
        timings = dict(turn.timings or {})
        timings["pipeline_s"] = round(
            sum(float(v.get("total_s") or 0) for v in timings.values() if isinstance(v, dict)), 4
        )
        created = turn.created_at
        if created is not None:
            created = created if created.tzinfo else created.replace(tzinfo=UTC)
            timings["wall_s"] = round((utcnow() - created).total_seconds(), 3)
        turn.timings = timings
        turn.status = TurnStatus.done
    events.emit(answered.turn_id, Done(status="done", timings=timings))
    log.info("turn=%s done: %d sentences, not spoken", answered.turn_id, len(answered.sentences))
    return Spoken(answered.turn_id, None)
