"""Live voice consultations over the OpenAI Realtime protocol (app/live/realtime.py).

GET  /v1/realtime                   WebSocket. Credentials: `Authorization: Bearer <JWT or ticket>` at the handshake,
                                    or the subprotocol `openai-insecure-api-key.<JWT or ticket>` (what the OpenAI JS
                                    SDK sends from a browser). `?consultation_id=` continues one of the caller's
                                    consultations; otherwise the session opens a new one. `OpenAI-Beta: realtime=v1`
                                    (or the subprotocol `openai-beta.realtime-v1`) selects the beta dialect.
POST /v1/realtime/sessions          (beta) a session config and a single-use `client_secret` for a browser
POST /v1/realtime/client_secrets    (GA) the same, in the GA shape

A refused connection is accepted and closed at once with a code and a reason, before any audio is taken:
4401 credentials, 4403 not allowed, 4404 consultation unknown, 4409 consultation closed, 4429 too many sessions,
1013 the live pool too far behind to take another speaker (app/live/backlog.py; try again later), 4408 session
time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from fastapi import APIRouter, Body, HTTPException, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app import metrics as app_metrics
from app import tickets
from app.deps import AppSettings, AuthError, CurrentUser, authenticate
from app.live import backlog, records
from app.live.realtime import (
    ClientError,
    Config,
    Dialect,
    RealtimeSession,
    apply_update,
    default_config,
    new_id,
    session_object,
)
from workers.core import events, logs
from workers.core.db import session_scope
from workers.core.settings import Settings

log = logging.getLogger("medvoice.api.realtime")
router = APIRouter(tags=["realtime"])
KEY_PROTOCOL = "openai-insecure-api-key."
BETA_PROTOCOL = "openai-beta.realtime-v1"
TICKET_PURPOSE = "realtime"
AUTH_RECHECK_S = 15.0

_open: dict[str, str] = {}  # session id → user id, for this API process's limits


def _offered(ws: WebSocket) -> list[str]:
    raw = ws.headers.get("sec-websocket-protocol") or ""
    return [p.strip() for p in raw.split(",") if p.strip()]


def _credential(ws: WebSocket) -> str | None:
    auth = ws.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    for proto in _offered(ws):
        if proto.startswith(KEY_PROTOCOL):
            return proto[len(KEY_PROTOCOL) :]
    return None


def _authenticate(settings: Settings, credential: str | None) -> tuple[str, dict[str, Any]]:
    """The user id behind a JWT or a realtime ticket, and the session config the ticket was minted with."""
    if credential and credential.startswith("mvt_"):
        ticket = tickets.redeem(events.client(settings.redis_url), credential, TICKET_PURPOSE)
        if ticket is None:
            raise records.SessionRefused(4401, "the ticket is unknown, used or expired")
        records.still_allowed(settings, ticket.user_id)
        return ticket.user_id, ticket.scope
    with session_scope(settings.resolved_database_url) as db:
        try:
            return authenticate(credential, db, settings).id, {}
        except AuthError as exc:
            raise records.SessionRefused(4401, str(exc)) from None


def _limits(settings: Settings, user_id: str) -> None:
    if len(_open) >= settings.live_max_sessions:
        app_metrics.LIVE_REFUSED.labels(reason="limit").inc()
        raise records.SessionRefused(4429, f"this server holds its limit of {settings.live_max_sessions} live sessions")
    if sum(u == user_id for u in _open.values()) >= settings.live_max_sessions_per_user:
        app_metrics.LIVE_REFUSED.labels(reason="limit").inc()
        raise records.SessionRefused(
            4429, f"you already hold {settings.live_max_sessions_per_user} live sessions; close one first"
        )
    behind = backlog.refusal(settings)
    if behind is not None:
        raise records.SessionRefused(1013, behind)


async def _refuse(ws: WebSocket, code: int, reason: str) -> None:
    if ws.client_state == WebSocketState.CONNECTING:
        await ws.accept(subprotocol="realtime" if "realtime" in _offered(ws) else None)
    with contextlib.suppress(Exception):
        await ws.close(code=code, reason=reason[:120])


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket) -> None:
    settings: Settings = ws.app.state.settings
    session_id = new_id("sess")
    beta = "realtime=v1" in (ws.headers.get("openai-beta") or "") or BETA_PROTOCOL in _offered(ws)
    dialect = Dialect.beta if beta else Dialect.ga
    try:
        user_id, scope = await run_in_threadpool(_authenticate, settings, _credential(ws))
        _limits(settings, user_id)
        consultation_id = await run_in_threadpool(
            records.open_consultation,
            settings,
            user_id,
            ws.query_params.get("consultation_id") or scope.get("consultation_id"),
            session_id,
        )
    except records.SessionRefused as exc:
        log.info("live session refused: %d", exc.code)
        await _refuse(ws, exc.code, exc.reason)
        return
    config = default_config(settings)
    if scope.get("session"):
        with contextlib.suppress(ClientError):
            config = apply_update(scope["session"], config, settings)
    await ws.accept(subprotocol="realtime" if "realtime" in _offered(ws) else None)
    _open[session_id] = user_id
    session = RealtimeSession(ws, settings, user_id, consultation_id, session_id, dialect, config)
    started = time.monotonic()
    log.info("live session=%s open consultation=%s dialect=%s", session_id, consultation_id, dialect.value)
    watchdog = asyncio.create_task(_watch(session, settings, user_id))
    bound = logs.bind_token(session_id=session_id)  # every line of this session carries its id
    try:
        await session.start()
        await _receive(ws, session, settings)
    finally:
        watchdog.cancel()
        _open.pop(session_id, None)
        await session.close()
        with contextlib.suppress(Exception):
            await run_in_threadpool(
                records.close_session,
                settings,
                user_id,
                consultation_id,
                session_id,
                duration_s=round(time.monotonic() - started, 1),
                turns=session.turns,
                barge_ins=session.barge_ins,
            )
        log.info("live session=%s closed after %.1fs, %d turns", session_id, time.monotonic() - started, session.turns)
        logs.unbind(bound)


async def _receive(ws: WebSocket, session: RealtimeSession, settings: Settings) -> None:
    while True:
        try:
            message = await ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message.get("type") == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            await session.error(
                "invalid_frame", "binary frames are not part of the Realtime protocol; send JSON events"
            )
            continue
        if len(text) > settings.live_max_frame_bytes:
            await session.error("frame_too_large", f"an event may be at most {settings.live_max_frame_bytes} bytes")
            continue
        try:
            event = json.loads(text)
        except ValueError as exc:
            await session.error("invalid_json", f"the event is not valid JSON: {exc}")
            continue
        if not isinstance(event, dict):
            await session.error("invalid_event", "an event must be a JSON object with a type")
            continue
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            await session.handle(event)
        except ClientError as exc:
            await session.error(exc.code, exc.message, exc.param, event_id)
        except Exception as exc:
            log.exception("live session=%s event failed", session.id)
            await session.error(
                "server_error", f"the event could not be handled ({type(exc).__name__})", None, event_id
            )


async def _watch(session: RealtimeSession, settings: Settings, user_id: str) -> None:
    """Close the session at its time limit, or as soon as its user is disabled."""
    deadline = time.monotonic() + settings.live_max_session_s
    while not session.closed:
        await asyncio.sleep(min(AUTH_RECHECK_S, max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            await session.error("session_expired", f"live sessions last at most {settings.live_max_session_s:g}s")
            await _refuse(session.ws, 4408, "session time limit reached")
            return
        try:
            await run_in_threadpool(records.still_allowed, settings, user_id)
        except records.SessionRefused as exc:
            await session.error("session_closed", exc.reason)
            await _refuse(session.ws, exc.code, exc.reason)
            return
        except Exception:  # noqa: BLE001 - the database is briefly away: check again next time
            continue


# ---- tickets for browsers ----------------------------------------------------------------------------------------
def _mint(settings: Settings, user_id: str, body: dict[str, Any] | None) -> tuple[str, int, Config]:
    """A single-use ticket carrying the session config (and optional consultation) the browser asked for."""
    body = body if isinstance(body, dict) else {}
    session = body.get("session", body)
    try:
        config = apply_update({k: v for k, v in session.items() if k != "model"}, default_config(settings), settings)
    except ClientError as exc:
        raise HTTPException(400, {"code": exc.code, "message": exc.message, "param": exc.param}) from None
    scope: dict[str, Any] = {"session": session}
    if isinstance(body.get("consultation_id"), str):
        scope["consultation_id"] = body["consultation_id"]
    token = tickets.mint(events.client(settings.redis_url), user_id, TICKET_PURPOSE, settings.live_ticket_ttl_s, scope)
    return token, int(time.time()) + settings.live_ticket_ttl_s, config


@router.post("/v1/realtime/sessions")
def realtime_session(
    user: CurrentUser, settings: AppSettings, body: dict[str, Any] | None = Body(default=None)
) -> dict:
    token, expires, config = _mint(settings, user.id, body)
    session = session_object(config, Dialect.beta, new_id("sess"), settings)
    return {**session, "client_secret": {"value": token, "expires_at": expires}}


@router.post("/v1/realtime/client_secrets")
def realtime_client_secret(
    user: CurrentUser, settings: AppSettings, body: dict[str, Any] | None = Body(default=None)
) -> dict:
    token, expires, config = _mint(settings, user.id, body)
    return {
        "value": token,
        "expires_at": expires,
        "session": session_object(config, Dialect.ga, new_id("sess"), settings),
    }
