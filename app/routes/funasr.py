"""FunASR clients' WebSocket: `/v1/asr/funasr` on the API port (a JWT required), and the dedicated port's own app.

FunASR's clients connect to the root path of `host:port` (10095 by default), offer the `binary` subprotocol and
send no credentials. `create_funasr_app` serves them at `/` on MEDVOICE_FUNASR_PORT (`medvoice serve` runs it beside
the API when the port is set): connections from MEDVOICE_FUNASR_ALLOW (networks; loopback by default) need no
credentials; a JWT (`Authorization: Bearer`, or `?token=`) is accepted from anywhere and must then be valid; any
other connection is closed with the reason. The protocol itself is app/live/funasr.py. Every session writes one
audit event (the user or the client's address, mode, duration, audio seconds, how it ended), never its text.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import uuid
from collections import Counter
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from app import metrics as app_metrics
from app.audit import audit
from app.deps import AuthError, authenticate
from app.live import backlog, funasr
from workers.core.db import new_session
from workers.core.records import User
from workers.core.settings import Settings, get_settings

log = logging.getLogger("medvoice.live.funasr")
router = APIRouter(tags=["live"])
PATH = "/v1/asr/funasr"
SUBPROTOCOL = "binary"  # what FunASR's clients offer

_open: Counter[str] = Counter()  # open sessions of this process: "*" all, and per user id


class _Socket:
    """A Starlette WebSocket as the protocol's Connection; sends are serialised (partials and finals race)."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._lock = asyncio.Lock()

    async def receive(self) -> str | bytes | None:
        try:
            msg = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if msg["type"] == "websocket.disconnect":
            return None
        if msg.get("bytes") is not None:
            return msg["bytes"]
        return msg.get("text") or ""

    async def send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            await self.ws.send_json(message)


def _token(ws: WebSocket) -> str | None:
    header = ws.headers.get("authorization") or ""
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return ws.query_params.get("token") or None


def _user(settings: Settings, token: str) -> tuple[str, str]:
    db = new_session(settings.resolved_database_url)
    try:
        user = authenticate(token, db, settings)
        return user.id, user.role.value
    finally:
        db.close()


@lru_cache(maxsize=16)
def _networks(spec: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n.strip(), strict=False) for n in spec.split(",") if n.strip())


def allowed(address: str | None, spec: str) -> bool:
    """Is the client's address inside one of the comma-separated networks? (IPv4-mapped IPv6 counts as IPv4.)"""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in _networks(spec))


async def _refuse(
    ws: WebSocket, why: str, reason: str, code: int = funasr.CLOSE_POLICY, subprotocol: str | None = None
) -> None:
    """Accept, say why in FunASR's reply shape, and close with the reason (a refusal before the handshake would
    reach the client as a bare HTTP 403)."""
    await ws.accept(subprotocol=subprotocol)
    with contextlib.suppress(Exception):
        await ws.send_json(
            {"mode": "offline", "wav_name": "", "text": "", "is_final": True, "error": reason, "code": why}
        )
        await ws.close(code=code, reason=reason[:120])


def _audit_session(settings: Settings, user_id: str | None, detail: dict[str, Any], session_id: str) -> None:
    db = new_session(settings.resolved_database_url)
    try:
        actor = db.get(User, user_id) if user_id else None
        audit(db, actor, "funasr.session", "live_session", session_id, **detail)
        db.commit()
    except Exception as exc:  # noqa: BLE001 - a lost audit row is logged, never the client's problem
        db.rollback()
        log.warning("session=%s audit event not written: %s", session_id, type(exc).__name__)
    finally:
        db.close()


async def handle(ws: WebSocket, settings: Settings, port: str, require_token: bool) -> None:
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in ws.scope.get("subprotocols", []) else None
    address = ws.client.host if ws.client else None
    token = _token(ws)
    user_id: str | None = None
    if token:
        try:
            user_id, _role = await run_in_threadpool(_user, settings, token)
        except AuthError as exc:
            return await _refuse(ws, "not_authenticated", f"not authenticated: {exc}", subprotocol=subprotocol)
    elif require_token:
        reason = "not authenticated: send a bearer JWT (Authorization header or ?token=)"
        return await _refuse(ws, "not_authenticated", reason, subprotocol=subprotocol)
    elif not allowed(address, settings.funasr_allow):
        reason = "this address may not connect without a JWT"
        return await _refuse(ws, "address_not_allowed", reason, subprotocol=subprotocol)
    limit = None
    if _open["*"] >= settings.live_max_sessions:
        limit = "too many live sessions; try again later"
    elif user_id and _open[user_id] >= settings.live_max_sessions_per_user:
        limit = "too many live sessions for this user"
    if limit is not None:
        app_metrics.LIVE_REFUSED.labels(reason="limit").inc()
        return await _refuse(ws, "too_many_sessions", limit, code=1013, subprotocol=subprotocol)
    behind = backlog.refusal(settings)
    if behind is not None:
        return await _refuse(ws, "pool_behind", behind, code=1013, subprotocol=subprotocol)

    session_id = str(uuid.uuid4())
    started = datetime.now(UTC)
    _open["*"] += 1
    if user_id:
        _open[user_id] += 1
    summary = funasr.Summary()
    try:
        await ws.accept(subprotocol=subprotocol)
        summary = await funasr.serve(settings, _Socket(ws), session_id)
        if summary.close_code is not None:
            with contextlib.suppress(Exception):
                await ws.close(code=summary.close_code, reason=summary.close_reason[:120])
    except Exception as exc:  # one broken session never takes the server or the others with it
        log.exception("session=%s failed: %s", session_id, type(exc).__name__)
        summary.close_code, summary.close_reason = 1011, "internal error"
        with contextlib.suppress(Exception):
            await ws.close(code=1011, reason="internal error")
    finally:
        _open["*"] -= 1
        if user_id:
            _open[user_id] -= 1
        detail = {
            "port": port,
            "address": address,
            "started": started.isoformat(),
            "duration_s": round((datetime.now(UTC) - started).total_seconds(), 2),
            "modes": summary.modes,
            "streams": summary.streams,
            "utterances": summary.utterances,
            "audio_s": round(summary.audio_s, 2),
            "errors": summary.errors[:20],
            "close": summary.close_code or "client",
        }
        await run_in_threadpool(_audit_session, settings, user_id, detail, session_id)


@router.websocket(PATH)
async def funasr_on_api_port(websocket: WebSocket) -> None:
    """FunASR's protocol on the API port: a JWT is required here (header, or ?token= for clients without one)."""
    await handle(websocket, websocket.app.state.settings, "api", require_token=True)


def create_funasr_app(settings: Settings | None = None) -> FastAPI:
    """The dedicated port's app: FunASR's protocol at the root path, for clients that cannot be told a path."""
    settings = settings or get_settings()
    app = FastAPI(title="medvoice FunASR", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings

    @app.websocket("/")
    async def funasr_root(websocket: WebSocket) -> None:
        await handle(websocket, settings, "funasr", require_token=False)

    return app


async def serve_together(*servers: Any) -> None:
    """Several uvicorn servers in one process (the API and the FunASR port): when one stops, all stop."""
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for s in servers:
        s.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
