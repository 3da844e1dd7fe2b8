"""The browser console: a static page at /console/ that signs in, opens a live session on /v1/realtime with a
single-use ticket and talks to medvoice (app/console/static). No build step: the files ship in the package.

Each asset is served with an explicit content type (the platform's mimetypes table may map .js to text/plain,
which a module script under `nosniff` refuses) and `no-cache`, so a deployment's update is picked up at once.
The edge middleware (app/http_security.py) adds the strict Content-Security-Policy the page is written for.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

STATIC = Path(__file__).resolve().parent.parent / "console" / "static"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
ASSETS = {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in TYPES} if STATIC.is_dir() else {}
HEADERS = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/console")
def console_root() -> RedirectResponse:
    # The page's assets are relative to /console/, so it also works behind a proxy that adds a path prefix.
    return RedirectResponse("console/", status_code=308)


@router.get("/console/")
def console_page() -> FileResponse:
    return _file("index.html")


@router.get("/console/{name}")
def console_asset(name: str) -> FileResponse:
    return _file(name)


def _file(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise HTTPException(404, "not found")
    return FileResponse(path, media_type=TYPES[path.suffix], headers=HEADERS)
