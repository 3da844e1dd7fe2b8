"""Short-lived, single-use tickets for clients that cannot send an Authorization header (a browser's WebSocket
or EventSource): an authenticated request mints one, the connection presents it once.

A ticket is a random token; Redis keeps only its SHA-256 (so a Redis dump holds no usable ticket) with the
user, the purpose it was minted for and its scope, under a TTL. Redeeming deletes it (GETDEL): a ticket seen
twice, expired, or minted for another purpose is refused.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import redis

PREFIX = "medvoice:ticket:"
MAX_TTL_S = 600


@dataclass(frozen=True)
class Ticket:
    user_id: str
    purpose: str
    issued_at: float
    scope: dict[str, Any] = field(default_factory=dict)


def _key(token: str) -> str:
    return PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def mint(r: redis.Redis, user_id: str, purpose: str, ttl_s: int, scope: dict[str, Any] | None = None) -> str:
    """A new ticket for `purpose` (e.g. "realtime"), valid for ttl_s seconds and for one use."""
    if not 1 <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"a ticket lives 1 to {MAX_TTL_S} seconds")
    token = "mvt_" + secrets.token_urlsafe(32)
    value = {"user_id": user_id, "purpose": purpose, "issued_at": time.time(), "scope": scope or {}}
    r.set(_key(token), json.dumps(value), ex=ttl_s)
    return token


def redeem(r: redis.Redis, token: str, purpose: str) -> Ticket | None:
    """The ticket's holder, consumed; None when the token is unknown, used, expired, or for another purpose."""
    if not token.startswith("mvt_") or len(token) > 100:
        return None
    raw = r.getdel(_key(token))
    if raw is None:
        return None
    value = json.loads(raw)
    if value.get("purpose") != purpose:
        return None
    return Ticket(value["user_id"], value["purpose"], float(value["issued_at"]), value.get("scope") or {})
