"""What the HTTP edge adds to every request and response: a request id, security headers, and CORS from an
explicit allow-list only.

- **Request id**: an `X-Request-ID` the client sent (letters, digits, `._-`, at most 64) is kept, else a new
  one is made; it is bound for logging (workers/core/logs.py) while the request runs and returned on the
  response, so one id finds a request's every log line.
- **Headers**: a strict Content-Security-Policy for the browser console served at /console (scripts, styles
  and workers from this origin only, no inline script; `connect-src` this origin and its ws/wss for the live
  socket; `media-src`/`worker-src` also `blob:` for recorded audio and the AudioWorklet; no framing), plus
  `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY` and a
  Permissions-Policy that allows the microphone to this origin only. The interactive docs (/docs, /redoc)
  run FastAPI's inline Swagger bootstrap, so they keep every header but the CSP.
- **CORS**: off unless settings.cors_origins names origins; never a wildcard (the settings refuse `*`).
"""

from __future__ import annotations

import re
import uuid

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.core import logs
from workers.core.settings import Settings

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Only a plain host[:port] goes into the policy: a Host header cannot add directives of its own.
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")

CSP_BASE = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    "media-src 'self' blob:",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)
STATIC_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"permissions-policy", b"microphone=(self), camera=(), geolocation=()"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


def content_security_policy(host: str | None) -> str:
    """The policy, with the WebSocket origins of `host` (the request's Host) beside 'self' in connect-src:
    browsers that predate CSP 3 do not count ws/wss of the page's own origin as 'self'."""
    connect = "connect-src 'self'"
    if host and _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join((*CSP_BASE, connect))


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers") or ():
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(given):
                return given
    return uuid.uuid4().hex


class EdgeMiddleware:
    """Request id + security headers, as plain ASGI (no buffering of streamed responses such as SSE)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        path = scope.get("path") or ""
        host = next((v.decode("latin-1") for k, v in scope.get("headers") or () if k == b"host"), None)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                present = {k.lower() for k, _ in headers}
                extra = [(b"x-request-id", request_id.encode()), *STATIC_HEADERS]
                if not path.startswith(DOCS_PATHS):
                    extra.append((b"content-security-policy", content_security_policy(host).encode()))
                headers.extend((k, v) for k, v in extra if k not in present)
                message = {**message, "headers": headers}
            await send(message)

        with logs.bind(request_id=request_id):
            await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def install(app: FastAPI, settings: Settings) -> None:
    """Add CORS (when origins are configured) inside the edge middleware, so CORS answers get its headers."""
    origins = settings.cors_origin_list
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "Location"],
            allow_credentials=False,  # bearer tokens, not cookies
            max_age=600,
        )
    app.add_middleware(EdgeMiddleware)
