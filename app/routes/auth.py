"""Sign-in (OAuth2 password form → JWT) and `who am I`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from app.deps import AppSettings, CurrentUser, DbSession
from app.security import issue_token, verify_password
from app.users import get_by_username

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: str


class UserOut(BaseModel):
    id: str
    username: str
    role: str
    is_active: bool


@router.post("/token", response_model=TokenOut)
def token(form: Annotated[OAuth2PasswordRequestForm, Depends()], db: DbSession, settings: AppSettings) -> TokenOut:
    user = get_by_username(db, form.username)
    # One message for every failure, so the endpoint does not reveal which usernames exist.
    if user is None or not verify_password(user.password_hash, form.password) or not user.is_active:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="invalid username or password, or account disabled",
            headers={"WWW-Authenticate": "Bearer"},
        )
    access, lifetime = issue_token(user, settings)
    return TokenOut(access_token=access, expires_in=lifetime, role=user.role.value)


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser) -> UserOut:
    return UserOut(id=user.id, username=user.username, role=user.role.value, is_active=user.is_active)
