"""Liveness, readiness and Prometheus metrics for operators."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app import metrics as app_metrics
from app.deps import AppSettings, AuthError, authenticate
from app.live import backlog
from app.readiness import readiness
from workers.core.db import session_scope
from workers.core.records import Role

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(settings: AppSettings) -> JSONResponse:
    body = readiness(settings)
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, settings: AppSettings) -> Response:
    """The API's Prometheus metrics (app/metrics.py): anyone with metrics_public, else loopback clients and admins."""
    if not settings.metrics_public and not app_metrics.loopback(request.client.host if request.client else None):
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            with session_scope(settings.resolved_database_url) as db:
                user = authenticate(token if scheme.lower() == "bearer" else None, db, settings)
                admin = user.role == Role.admin
        except AuthError as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
        if not admin:
            raise HTTPException(403, "admin role required")
    backlog.BACKLOG.lag_s()  # the lag gauge as of now (it is otherwise set when sessions look at it)
    return Response(app_metrics.render(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
