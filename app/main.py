"""The FastAPI application (the edge): no model library is ever imported in this process."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from app.routes import admin, auth, consultations, health, knowledge, openai_audio, turns
from workers.settings import Settings, get_settings

log = logging.getLogger("medvoice.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="medvoice",
        version="0.1.0",
        description="Offline voice knowledge assistant for clinics.",
    )
    app.state.settings = settings
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(consultations.router)
    app.include_router(admin.router)
    app.include_router(knowledge.router)
    app.include_router(turns.router)
    app.include_router(openai_audio.router)
    return app
