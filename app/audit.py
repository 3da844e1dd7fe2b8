"""Audit trail: who read or wrote which record, when. Ids only, never clinical text."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from workers.core.records import AuditEvent, User


def audit(
    db: Session,
    actor: User | None,
    action: str,
    record_type: str,
    record_id: str | None,
    **detail: Any,
) -> None:
    db.add(
        AuditEvent(
            actor_id=actor.id if actor else None,
            actor_role=actor.role.value if actor else None,
            action=action,
            record_type=record_type,
            record_id=record_id,
            detail=detail,
        )
    )
