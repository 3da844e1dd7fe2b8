"""Consultations: a clinician's own records; admins may read any, and every access is audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from app.audit import audit
from app.deps import CurrentUser, DbSession
from workers.core.records import Consultation, Role, Turn, User
from workers.grounding import cited_numbers

router = APIRouter(prefix="/v1/consultations", tags=["consultations"])


class ConsultationIn(BaseModel):
    title: str | None = Field(default=None, max_length=200)


class ConsultationOut(BaseModel):
    id: str
    owner_id: str
    title: str | None
    status: str
    created_at: datetime
    turn_count: int


class CitationOut(BaseModel):
    n: int  # the [n] marker in the answer
    title: str | None
    source: str | None
    score: float
    document_id: str
    chunk_id: str
    cited: bool  # the answer uses this [n] marker (otherwise: retrieved and shown to the model only)


class TurnOut(BaseModel):
    id: str
    consultation_id: str
    index: int
    status: str
    input_kind: str
    question: str | None  # the typed question (text turns)
    transcript: str | None  # what ASR heard (audio turns)
    language: str | None
    answer: str | None
    citations: list[CitationOut]
    timings: dict[str, Any]
    guard_fired: bool
    verdicts: dict[str, Any] | None  # answerability, claim and style verdicts, answer mode (quoted / generated)
    interrupted: bool  # a live reply cut short by the clinician (barge-in, cancel)
    live: dict[str, Any] | None  # live sessions: session id, endpoint timings, how much of the reply was heard
    error: str | None
    disclaimer: str | None  # the medical disclaimer the answer was given with, in its language
    has_reply_audio: bool
    created_at: datetime
    updated_at: datetime


class ConsultationDetail(ConsultationOut):
    turns: list[TurnOut]


def turn_out(t: Turn) -> TurnOut:
    used = set(cited_numbers(t.answer or ""))
    return TurnOut(
        id=t.id,
        consultation_id=t.consultation_id,
        index=t.index,
        status=t.status.value,
        input_kind=t.input_kind,
        question=t.question_text,
        transcript=t.transcript,
        language=t.language,
        answer=t.answer,
        citations=[
            CitationOut(
                n=c.n,
                title=c.title,
                source=c.source,
                score=c.score,
                document_id=c.document_id,
                chunk_id=c.chunk_id,
                cited=c.n in used,
            )
            for c in t.citations
        ],
        timings=t.timings or {},
        guard_fired=bool(t.guard_fired),
        verdicts=t.verdicts,
        interrupted=bool(t.interrupted),
        live=t.live,
        error=t.error,
        disclaimer=t.disclaimer,
        has_reply_audio=bool(t.reply_audio_ref),
        created_at=t.created_at,
        updated_at=t.updated_at,
    )


def _out(c: Consultation) -> ConsultationOut:
    return ConsultationOut(
        id=c.id,
        owner_id=c.owner_id,
        title=c.title,
        status=c.status.value,
        created_at=c.created_at,
        turn_count=len(c.turns),
    )


def load_consultation(db: DbSession, user: User, consultation_id: str) -> Consultation:
    """The consultation if this user may see it; 404 otherwise, so ids of others' records don't leak."""
    c = db.get(Consultation, consultation_id)
    if c is None or (c.owner_id != user.id and user.role != Role.admin):
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="consultation not found")
    return c


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ConsultationOut)
def create_consultation(body: ConsultationIn, user: CurrentUser, db: DbSession) -> ConsultationOut:
    c = Consultation(owner_id=user.id, title=body.title)
    db.add(c)
    db.flush()
    audit(db, user, "consultation.create", "consultation", c.id)
    db.commit()  # before the response: a client's next request must see the record
    return _out(c)


@router.get("", response_model=list[ConsultationOut])
def list_consultations(user: CurrentUser, db: DbSession) -> list[ConsultationOut]:
    query = select(Consultation).order_by(Consultation.created_at.desc())
    if user.role != Role.admin:
        query = query.where(Consultation.owner_id == user.id)
    rows = list(db.scalars(query))
    audit(db, user, "consultation.list", "consultation", None, count=len(rows))
    db.commit()
    return [_out(c) for c in rows]


@router.get("/{consultation_id}", response_model=ConsultationDetail)
def get_consultation(consultation_id: str, user: CurrentUser, db: DbSession) -> ConsultationDetail:
    """The consultation with every turn: transcript, language, answer, citations, stage timings, status."""
    c = load_consultation(db, user, consultation_id)
    audit(db, user, "consultation.read", "consultation", c.id, owner_id=c.owner_id)
    db.commit()
    return ConsultationDetail(**_out(c).model_dump(), turns=[turn_out(t) for t in c.turns])
