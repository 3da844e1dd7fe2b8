"""SQL records (SQLAlchemy 2.x typed models).

They live in workers/ rather than app/ because both the API and the worker processes write them
(workers record each stage's result on its turn) and the dependency arrows only point app → workers.
The schema itself is owned by Alembic (migrations/); nothing here calls create_all.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    # Random UUIDs: never guessable, never reused after a delete (SQLite reuses integer rowids).
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Role(str, enum.Enum):
    clinician = "clinician"
    admin = "admin"


class ConsultationStatus(str, enum.Enum):
    open = "open"
    closed = "closed"


class TurnStatus(str, enum.Enum):
    queued = "queued"
    transcribing = "transcribing"
    retrieving = "retrieving"
    generating = "generating"
    speaking = "speaking"
    done = "done"
    error = "error"


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(Enum(Role, name="user_role", native_enum=False, length=16))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Tokens issued before this instant are refused (password change, re-enable after disable).
    tokens_valid_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    consultations: Mapped[list[Consultation]] = relationship(back_populates="owner")


class Consultation(Base):
    __tablename__ = "consultations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    title: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[ConsultationStatus] = mapped_column(
        Enum(ConsultationStatus, name="consultation_status", native_enum=False, length=16),
        default=ConsultationStatus.open,
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    owner: Mapped[User] = relationship(back_populates="consultations")
    turns: Mapped[list[Turn]] = relationship(
        back_populates="consultation", order_by="Turn.index", cascade="all, delete-orphan"
    )


class Turn(Base):
    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("consultation_id", "index", name="uq_turns_consultation_index"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    consultation_id: Mapped[str] = mapped_column(ForeignKey("consultations.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[TurnStatus] = mapped_column(
        Enum(TurnStatus, name="turn_status", native_enum=False, length=16), default=TurnStatus.queued
    )
    input_kind: Mapped[str] = mapped_column(String(8), default="audio")  # audio | text
    audio_ref: Mapped[str | None] = mapped_column(String(512), nullable=True)
    question_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    transcript: Mapped[str | None] = mapped_column(Text, nullable=True)
    language: Mapped[str | None] = mapped_column(String(8), nullable=True)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    reply_audio_ref: Mapped[str | None] = mapped_column(String(512), nullable=True)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    guard_fired: Mapped[bool] = mapped_column(Boolean, default=False)
    # As given with the answer: a later change of the configured text does not rewrite the record.
    disclaimer: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What the answer-safety checks decided (workers/answering.py): answerability, each sentence's claim
    # verdict, the style filter, and whether the answer was quoted or generated.
    verdicts: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Live sessions: the reply was cut short (barge-in, cancel, truncate); `live` holds the session id, endpoint
    # timings and how much of the reply was sent and heard. Written by the API only, never by a stage.
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    live: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    consultation: Mapped[Consultation] = relationship(back_populates="turns")
    citations: Mapped[list[Citation]] = relationship(
        back_populates="turn", order_by="Citation.n", cascade="all, delete-orphan"
    )


class Citation(Base):
    __tablename__ = "citations"
    __table_args__ = (UniqueConstraint("turn_id", "n", name="uq_citations_turn_n"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    turn_id: Mapped[str] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    n: Mapped[int] = mapped_column(Integer)  # the [n] marker used in the answer
    chunk_id: Mapped[str] = mapped_column(String(128))
    document_id: Mapped[str] = mapped_column(String(128))
    title: Mapped[str | None] = mapped_column(String(300), nullable=True)
    source: Mapped[str | None] = mapped_column(String(300), nullable=True)
    score: Mapped[float] = mapped_column(Float)

    turn: Mapped[Turn] = relationship(back_populates="citations")


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_record", "record_type", "record_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor_id: Mapped[str | None] = mapped_column(String(36), nullable=True)  # kept after a user is deleted
    actor_role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    record_type: Mapped[str] = mapped_column(String(32))
    record_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
