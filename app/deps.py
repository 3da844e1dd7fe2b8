"""FastAPI dependencies, read as types: `DbSession`, `CurrentUser`, `AdminUser`, `AppSettings`."""

from __future__ import annotations

from collections.abc import Iterator
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


def get_current_user(
    token: Annotated[str | None, Depends(oauth2_scheme)], db: DbSession, settings: AppSettings
) -> User:
    if not token:
        raise _unauthorized("missing bearer token")
    try:
        claims = decode_token(token, settings)
    except TokenError as exc:
        raise _unauthorized(str(exc)) from exc
    user = db.get(User, claims.sub)
    if user is None:
        raise _unauthorized("user no longer exists")
    if not user.is_active:
        raise _unauthorized("user is disabled")
    if user.role != claims.role:
        raise _unauthorized("role in token does not match the account")
    valid_after = as_utc(user.tokens_valid_after)
    if valid_after is not None and claims.iat < valid_after:
        raise _unauthorized("token was revoked; sign in again")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_admin_user(user: CurrentUser) -> User:
    if user.role != Role.admin:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="admin role required")
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]
