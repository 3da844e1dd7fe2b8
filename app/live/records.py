"""What a live session writes to SQL: its consultation, a Turn per utterance or typed question (the same rows and
audit events as a REST turn, via app/routes/turns.py), and afterwards how the reply went (`turns.live`,
`turns.interrupted`). Blocking functions: the session calls them in a worker thread."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException

from app.audit import audit
from app.deps import AuthError, active_user
from app.routes.turns import create_turn_record, enqueue
from workers.core.db import session_scope
from workers.core.errors import InputError
from workers.core.records import Consultation, ConsultationStatus, Turn, TurnStatus, User
from workers.core.settings import Settings


class SessionRefused(Exception):
    """The session cannot start or go on (its close code and a reason for the client)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def open_consultation(settings: Settings, user_id: str, consultation_id: str | None, session_id: str) -> str:
    """The consultation this session adds turns to: the caller's own open one, or a new one."""
    with session_scope(settings.resolved_database_url) as db:
        user = _user(db, user_id)
        if consultation_id:
            c = db.get(Consultation, consultation_id)
            if c is None or c.owner_id != user.id:
                raise SessionRefused(4404, "consultation not found")
            if c.status != ConsultationStatus.open:
                raise SessionRefused(4409, "the consultation is closed")
        else:
            c = Consultation(owner_id=user.id, title=f"Live session {datetime.now(UTC):%Y-%m-%d %H:%M}")
            db.add(c)
            db.flush()
            audit(db, user, "consultation.create", "consultation", c.id, live_session=session_id)
        audit(db, user, "live.session.open", "consultation", c.id, session=session_id)
        return c.id


def close_session(settings: Settings, user_id: str, consultation_id: str, session_id: str, **detail: Any) -> None:
    with session_scope(settings.resolved_database_url) as db:
        audit(
            db,
            db.get(User, user_id),
            "live.session.close",
            "consultation",
            consultation_id,
            session=session_id,
            **detail,
        )


def still_allowed(settings: Settings, user_id: str) -> None:
    """SessionRefused when the account was disabled or removed while the session was open."""
    with session_scope(settings.resolved_database_url) as db:
        _user(db, user_id)


def _user(db, user_id: str) -> User:  # noqa: ANN001
    try:
        return active_user(db, user_id)
    except AuthError as exc:
        raise SessionRefused(4401, str(exc)) from None


def add_turn(
    settings: Settings,
    user_id: str,
    consultation_id: str,
    body: dict[str, Any],
    live: dict[str, Any],
    stages: tuple[str, ...] | None,
    first_queue: str | None = None,
    first_state: dict[str, Any] | None = None,
) -> tuple[str, int]:
    """A turn for an utterance (`{"kind": "audio", "data": wav, "filename", "language"}`) or a typed question
    (`{"kind": "text", "text", "language"}`), with its pipeline sent (`stages`; None: sent later). Typed errors
    for bad input; SessionRefused when the consultation can no longer take turns."""
    with session_scope(settings.resolved_database_url) as db:
        user = _user(db, user_id)
        try:
            turn = create_turn_record(db, user, settings, consultation_id, body)
        except HTTPException as exc:
            raise SessionRefused(4409, str(exc.detail)) from None
        turn.live = live
        db.commit()
        if stages:
            enqueue(db, turn, stages, first_queue, first_state)
        return turn.id, turn.index


def send_stages(settings: Settings, turn_id: str, stages: tuple[str, ...], first_queue: str | None = None) -> None:
    with session_scope(settings.resolved_database_url) as db:
        turn = db.get(Turn, turn_id)
        if turn is None:
            raise InputError("no such turn", {"turn_id": turn_id})
        enqueue(db, turn, stages, first_queue)


def record_reply(settings: Settings, turn_id: str, interrupted: bool, **live: Any) -> None:
    """How the reply went, merged into `turns.live` (only the API writes it, so no stage write races this)."""
    with session_scope(settings.resolved_database_url) as db:
        turn = db.get(Turn, turn_id)
        if turn is None:
            return
        turn.live = {**(turn.live or {}), **live}
        turn.interrupted = bool(turn.interrupted or interrupted)


def fail_turn(settings: Settings, turn_id: str, reason: str) -> None:
    """A turn no worker took: `error` with the reason (unless a stage finished it meanwhile)."""
    with session_scope(settings.resolved_database_url) as db:
        turn = db.get(Turn, turn_id)
        if turn is not None and turn.status not in (TurnStatus.done, TurnStatus.error):
            turn.status = TurnStatus.error
            turn.error = reason[:2000]
