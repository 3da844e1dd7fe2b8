"""Password hashing (argon2) and JWT issue/verify (HS256 only)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from workers.core.records import Role, User
from workers.core.settings import Settings

_hasher = PasswordHasher()
ALGORITHM = "HS256"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # Made once per process with the same parameters as real hashes, so verifying against it costs the same.
    return _hasher.hash(secrets.token_urlsafe(16))


def verify_unknown_user(password: str) -> bool:
    """Spend one argon2 verification on a user name that does not exist (always False): a sign-in with an
    unknown name then takes as long as one with a wrong password, and does not reveal which names exist."""
    verify_password(_dummy_hash(), password)
    return False


@dataclass(frozen=True)
class TokenClaims:
    sub: str
    role: Role
    iat: datetime
    exp: datetime
    jti: str


class TokenError(Exception):
    """Why a bearer token was refused (the message is safe to return to the client)."""


def issue_token(user: User, settings: Settings) -> tuple[str, int]:
    now = datetime.now(UTC)
    lifetime = timedelta(minutes=settings.jwt_lifetime_minutes)
    claims = {
        "iss": settings.jwt_issuer,
        "sub": user.id,
        "role": user.role.value,
        # Sub-second iat: a revocation (disable, password change) in the same second as a sign-in must
        # still be ordered correctly against it. RFC 7519 NumericDate allows fractions.
        "iat": now.timestamp(),
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM), int(lifetime.total_seconds())


def decode_token(token: str, settings: Settings) -> TokenClaims:
    try:
        # The algorithm list is fixed: a token that says `alg: none` or RS256 is refused outright.
        raw = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            issuer=settings.jwt_issuer,
            options={"require": ["iss", "sub", "role", "iat", "exp", "jti"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenError("bad token signature") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise TokenError("token algorithm not allowed") from exc
    except jwt.PyJWTError as exc:
        raise TokenError(f"malformed token: {exc}") from exc
    try:
        role = Role(raw["role"])
    except ValueError as exc:
        raise TokenError("unknown role in token") from exc
    return TokenClaims(
        sub=str(raw["sub"]),
        role=role,
        iat=datetime.fromtimestamp(raw["iat"], UTC),
        exp=datetime.fromtimestamp(raw["exp"], UTC),
        jti=str(raw["jti"]),
    )
