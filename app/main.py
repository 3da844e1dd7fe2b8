"""The FastAPI application (the edge): no model library is ever imported in this process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app import http_security
from app import metrics as app_metrics
from app.routes import admin, auth, console, consultations, health, knowledge, realtime, turns
from app.routes import funasr as funasr_routes
from app.routes.openai import chat as openai_chat
from app.routes.openai import models as openai_models
from app.routes.openai import speech as openai_speech
from app.routes.openai import transcriptions as openai_transcriptions
from workers.core.errors import MedvoiceError
from workers.core.settings import Settings, get_settings

log = logging.getLogger("medvoice.api")


async def _reap_stalled_turns(settings: Settings) -> None:
    """Every consult_reap_interval_s, from start-up: turns whose queued work was lost end `error`; stored audio
    past its retention goes (workers/retention.py, at most every audio_retention_interval_s)."""
    from workers.reaper import reap
    from workers.retention import purge_if_due

    while True:
        try:
            await run_in_threadpool(reap, settings)
        except Exception as exc:  # noqa: BLE001 - the database or Redis may be down for a while
            log.warning("stalled-turn check failed: %s", type(exc).__name__)
        await run_in_threadpool(purge_if_due, settings)  # audio past MEDVOICE_AUDIO_RETENTION_DAYS; never raises
        await asyncio.sleep(settings.consult_reap_interval_s)


def error_body(exc: MedvoiceError) -> dict:
    """Our one error shape: {"detail": {"code", "message", "details"}}, with the error's own HTTP status."""
    return {"detail": {"code": exc.code, "message": exc.message, "details": exc.details}}


async def typed_error(_request: Request, exc: MedvoiceError) -> JSONResponse:
    """A typed error (workers/core/errors.py) that leaves a route: a task's, the task client's, or the route's own.
    The OpenAI-compatible routes (/v1/audio/*, /v1/models, /v1/chat/completions) answer in OpenAI's shape before
    it gets here."""
    return JSONResponse(error_body(exc), status_code=exc.http_status)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.create_task(_reap_stalled_turns(settings)) if settings.consult_reap_interval_s > 0 else None
        try:
            yield
        finally:
            if reaper is not None:
                reaper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reaper

    app = FastAPI(
        lifespan=lifespan,
        title="medvoice",
        version="0.1.0",
        description="Offline voice knowledge assistant for clinics.",
    )
    app.state.settings = settings
    app.add_exception_handler(MedvoiceError, typed_error)
    http_security.install(app, settings)  # request ids, security headers, CORS allow-list
    app.add_middleware(app_metrics.MetricsMiddleware)  # outermost: sees every response's final status
    app.state.metrics = app_metrics.ScrapeCollector(settings)  # queue depths and KB figures for /metrics
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(consultations.router)
    app.include_router(admin.router)
    app.include_router(knowledge.router)
    app.include_router(turns.router)
    app.include_router(openai_transcriptions.router)
    app.include_router(openai_speech.router)
    app.include_router(openai_models.router)
    app.include_router(openai_chat.router)
    app.include_router(realtime.router)
    app.include_router(funasr_routes.router)  # FunASR clients' live dictation (also on its own port)
    app.include_router(console.router)  # the browser console at /console/ (static files)
    return app
