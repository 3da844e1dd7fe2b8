"""Sign-in (OAuth2 password form → JWT) and `who am I`.

Failed sign-ins are counted in Redis, so every API process shares the counts: per user name (any name, known
or not, so a 429 says nothing about which names exist) and per client address, each over a fixed window of
login_window_s. At a limit the next attempt is a 429 with Retry-After, before any password is checked. A
success clears its user name's count only: the address's count stays, so one valid account cannot be used to
wipe the failures of an address that is guessing others' passwords.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Annotated

import redis
from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.deps import AppSettings, CurrentUser, DbSession
from app.security import issue_token, verify_password, verify_unknown_user
from app.users import get_by_username
from workers.core import events
from workers.core.records import User
from workers.core.settings import Settings

log = logging.getLogger("medvoice.api.auth")
router = APIRouter(prefix="/v1/auth", tags=["auth"])

THROTTLE_PREFIX = "medvoice:login:fail:"

# Atomic check-and-count: concurrent attempts cannot all pass a check made before any of them counted.
# Returns 0 (counted, go on) or the seconds until the first exhausted counter's window ends.
_RESERVE = """
local wait = 0
for i = 1, 2 do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n >= tonumber(ARGV[i]) then wait = math.max(wait, redis.call('TTL', KEYS[i]), 1) end
end
if wait > 0 then return wait end
for i = 1, 2 do
  if redis.call('INCR', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], ARGV[3]) end
end
return 0
"""
# A success: its user name's failures go; the address keeps its earlier failures, less this attempt's count.
_SUCCEEDED = """
redis.call('DEL', KEYS[1])
local n = tonumber(redis.call('GET', KEYS[2]) or '0')
if n > 0 then redis.call('DECR', KEYS[2]) end
return 0
"""


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


def throttle_keys(username: str, address: str) -> list[str]:
    # The name is hashed (and case-folded, so "Admin" and "admin" share a count): Redis holds no user names.
    name = hashlib.sha256(username.strip().casefold().encode("utf-8")).hexdigest()[:32]
    return [f"{THROTTLE_PREFIX}user:{name}", f"{THROTTLE_PREFIX}addr:{address}"]


def _client_address(request: Request) -> str:
    # Behind a reverse proxy, run uvicorn with --proxy-headers / --forwarded-allow-ips so this is the client's.
    return request.client.host if request.client else "unknown"


def _redis_call(settings: Settings, script: str, keys: list[str], *args: int) -> int:
    try:
        return int(events.client(settings.redis_url).eval(script, len(keys), *keys, *args))
    except redis.RedisError as exc:
        # Closed, not open: without its counters the throttle cannot stop a guessing attack.
        log.warning("login throttle unavailable: %s", type(exc).__name__)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "sign-in is unavailable: the login throttle's store (Redis) is down"
        ) from None


def _check_credentials(form: OAuth2PasswordRequestForm, db: Session, settings: Settings, keys: list[str]) -> User:
    wait = _redis_call(
        settings,
        _RESERVE,
        keys,
        settings.login_max_failures_per_user,
        settings.login_max_failures_per_address,
        settings.login_window_s,
    )
    if wait:
        log.warning("sign-in throttled: too many failures (retry after %ds)", wait)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed sign-ins for this user name or from this address; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    user = get_by_username(db, form.username)
    # An unknown name spends the same argon2 time as a wrong password (verify_unknown_user), so neither the
    # message nor the time tells which names exist.
    ok = verify_password(user.password_hash, form.password) if user else verify_unknown_user(form.password)
    if not ok or user is None or not user.is_active:
        log.info("sign-in failed")
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="invalid username or password, or account disabled",
            headers={"WWW-Authenticate": "Bearer"},
        )
    _redis_call(settings, _SUCCEEDED, keys)
    return user


@router.post("/token", response_model=TokenOut)
def token(
    request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()], db: DbSession, settings: AppSettings
) -> TokenOut:
    user = _check_credentials(form, db, settings, throttle_keys(form.username, _client_address(request)))
    access, lifetime = issue_token(user, settings)
    return TokenOut(access_token=access, expires_in=lifetime, role=user.role.value)


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser) -> UserOut:
    return UserOut(id=user.id, username=user.username, role=user.role.value, is_active=user.is_active)
