"""Liveness, readiness and Prometheus metrics for operators."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import AppSettings
from app.readiness import readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(settings: AppSettings) -> JSONResponse:
    body = readiness(settings)
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
