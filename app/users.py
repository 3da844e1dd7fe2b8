"""User accounts: the operations behind both `medvoice users ...` and the auth routes."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.security import hash_password
from workers.core.records import Consultation, Role, User

MIN_PASSWORD_LENGTH = 8


class UserError(ValueError):
    """A user operation that cannot be done, with a reason fit to show the admin."""


def _now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every instant we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")


def get_by_username(db: Session, username: str) -> User | None:
    return db.scalar(select(User).where(User.username == username))


def require(db: Session, username: str) -> User:
    user = get_by_username(db, username)
    if user is None:
        raise UserError(f"no user named {username!r}")
    return user


def create_user(db: Session, username: str, password: str, role: Role) -> User:
    username = username.strip()
    if not username or len(username) > 64:
        raise UserError("username must be 1-64 characters")
    if get_by_username(db, username) is not None:
        raise UserError(f"user {username!r} already exists")
    _check_password(password)
    user = User(username=username, password_hash=hash_password(password), role=role, is_active=True)
    db.add(user)
    db.flush()
    return user


def list_users(db: Session) -> list[User]:
    return list(db.scalars(select(User).order_by(User.username)))


def set_active(db: Session, username: str, active: bool) -> User:
    user = require(db, username)
    user.is_active = active
    # Re-enabling must not revive tokens issued before the account was disabled.
    user.tokens_valid_after = _now()
    return user


def set_password(db: Session, username: str, password: str) -> User:
    _check_password(password)
    user = require(db, username)
    user.password_hash = hash_password(password)
    user.tokens_valid_after = _now()
    return user


def delete_user(db: Session, username: str) -> None:
    user = require(db, username)
    owned = db.scalar(select(func.count()).select_from(Consultation).where(Consultation.owner_id == user.id))
    if owned:
        raise UserError(
            f"user {username!r} owns {owned} consultation(s); clinical records are kept, so disable the "
            "account instead (`medvoice users disable`)"
        )
    db.delete(user)
