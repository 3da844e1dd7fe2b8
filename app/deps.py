"""FastAPI dependencies, read as types: `DbSession`, `CurrentUser`, `AdminUser`, `AppSettings`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from app.security import TokenError, decode_token
from app.users import as_utc
from workers.core.db import new_session
from workers.core.records import Role, User
from workers.core.settings import Settings

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False)


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


AppSettings = Annotated[Settings, Depends(get_app_settings)]


def get_db(settings: AppSettings) -> Iterator[Session]:
    db = new_session(settings.resolved_database_url)
    try:
        yield db
        db.commit()
    except BaseException:
        db.rollback()
        raise
    finally:
        db.close()


DbSession = Annotated[Session, Depends(get_db)]


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=reason,
        headers={"WWW-Authenticate": "Bearer"},
    )


class AuthError(Exception):
    """Why a credential was refused (safe to show the client)."""


def authenticate(token: str | None, db: Session, settings: Settings) -> User:
    """The active user a bearer JWT names, or AuthError with the reason: for HTTP routes and WebSockets alike."""
    if not token:
        raise AuthError("missing bearer token")
    try:
        claims = decode_token(token, settings)
    except TokenError as exc:
        raise AuthError(str(exc)) from exc
    return active_user(db, claims.sub, claims.role, claims.iat)


def active_user(db: Session, user_id: str, role: Role | None = None, issued: datetime | None = None) -> User:
    """The account behind a credential, still active, with the role and not revoked since `issued`."""
    user = db.get(User, user_id)
    if user is None:
        raise AuthError("user no longer exists")
    if not user.is_active:
        raise AuthError("user is disabled")
    if role is not None and user.role != role:
        raise AuthError("role in token does not match the account")
    valid_after = as_utc(user.tokens_valid_after)
    if issued is not None and valid_after is not None and issued < valid_after:
        raise AuthError("token was revoked; sign in again")
    return user


def get_current_user(
    token: Annotated[str | None, Depends(oauth2_scheme)], db: DbSession, settings: AppSettings
) -> User:
    try:
        return authenticate(token, db, settings)
    except AuthError as exc:
        raise _unauthorized(str(exc)) from None


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_admin_user(user: CurrentUser) -> User:
    if user.role != Role.admin:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="admin role required")
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]
