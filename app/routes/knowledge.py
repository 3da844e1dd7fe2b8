"""Knowledge base over REST: admins upload, list and delete documents; clinicians search.

This process never opens the knowledge base itself (no chromadb, no embedding model here): each route
sends a `rag.*` task by name to the rag pool and waits for its reply (app/task_client.py). An uploaded file
is saved under <data_dir>/knowledge/uploads and passed to the worker by path.

Typed errors (bad input found by the worker or here, an unreachable queue 503, no reply in time 504, a
worker failure 502) answer {"detail": {"code", "message", "details"}} through the app's handler.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, File, Form, HTTPException, UploadFile, status
from pydantic import BaseModel, Field

from app import task_client
from app.audit import audit
from app.deps import AdminUser, AppSettings, CurrentUser, DbSession
from knowledge.files import atomic_path
from workers.core.errors import EmptyInput, InputNotFound, InputTooLarge
from workers.core.settings import Settings

router = APIRouter(prefix="/v1/knowledge", tags=["knowledge"])

UPLOAD_TYPES = {".txt", ".md", ".markdown", ".pdf", ".html", ".htm", ".docx", ".jsonl"}
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")


def _call(task: str, settings: Settings, timeout: float | None = None, **kwargs: Any) -> Any:
    """A rag.* task through the task client: its typed errors leave the route in our one error shape."""
    return task_client.call(task, kwargs, timeout_s=timeout or settings.kb_task_timeout_s)


class DocumentOut(BaseModel):
    doc_id: str
    title: str
    source: str
    date: str
    tags: list[str]
    language: str
    chunks: int
    content_hash: str
    ingested_at: str


class UploadOut(BaseModel):
    doc_id: str
    status: str  # added | updated | unchanged
    chunks: int


class SearchIn(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(default=5, ge=1, le=50)
    language: str | None = Field(default=None, pattern="^(en|zh)$")
    filters: dict[str, Any] | None = None


class HitOut(BaseModel):
    chunk_id: str
    doc_id: str
    title: str
    source: str
    date: str
    text: str
    similarity: float
    decay: float
    score: float


class SearchOut(BaseModel):
    hits: list[HitOut]
    nothing_relevant: bool
    query_language: str
    took_ms: float


def _safe_ext(name: str) -> str:
    ext = Path(name).suffix.lower()
    if ext not in UPLOAD_TYPES:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"unsupported file type {ext or '(none)'}; supported: {', '.join(sorted(UPLOAD_TYPES))}",
        )
    return ext


@router.post("/documents", status_code=status.HTTP_201_CREATED, response_model=UploadOut)
def upload_document(
    admin: AdminUser,
    db: DbSession,
    settings: AppSettings,
    file: UploadFile = File(...),
    doc_id: str | None = Form(default=None),
    source: str | None = Form(default=None),
    date: str | None = Form(default=None),
    tags: str | None = Form(default=None),
) -> UploadOut:
    """Upload one document (.txt .md .pdf .html .docx); re-uploading the same name and content is a no-op."""
    name = Path(file.filename or "upload").name
    ext = _safe_ext(name)
    if ext == ".jsonl":
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "bulk .jsonl loads go through `medvoice kb ingest`")
    stem = re.sub(r"[^a-z0-9]+", "-", Path(name).stem.lower()).strip("-")[:60] or "document"
    doc_id = doc_id or f"upload-{stem}"
    if not _ID_RE.match(doc_id):
        raise HTTPException(422, "doc_id: letters, digits, _ . : - (at most 128)")
    kb_root = Path(settings.kb_dir) if settings.kb_dir else settings.data_dir / "knowledge"
    upload_dir = (kb_root / "uploads").resolve()
    upload_dir.mkdir(parents=True, exist_ok=True)
    limit = settings.kb_max_upload_bytes
    size = 0
    final = upload_dir / f"{doc_id}{ext}"
    # Streamed to a file beside the final one, which it replaces only whole: too large or empty leaves nothing.
    with atomic_path(final, ".part") as tmp, tmp.open("wb") as out:
        while chunk := file.file.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise InputTooLarge(f"file larger than {limit} bytes", {"field": "file", "max_bytes": limit})
            out.write(chunk)
        if size == 0:
            raise EmptyInput("empty file", {"field": "file"})
    tag_list = [t.strip() for t in (tags or "").split(",") if t.strip()]
    summary = _call(
        "rag.ingest",
        settings,
        timeout=max(settings.kb_task_timeout_s, 600.0),
        paths=[str(final)],
        source=source or name,
        date=date,
        tags=tag_list,
        doc_id=doc_id,
    )
    if summary["failed"]:
        final.unlink(missing_ok=True)
        raise HTTPException(422, summary["failures"][0]["reason"])
    item = summary["documents"][0]
    audit(db, admin, "knowledge.upload", "document", item["doc_id"], status=item["status"], chunks=item["chunks"])
    db.commit()
    return UploadOut(**item)


@router.get("/documents", response_model=list[DocumentOut])
def list_documents(admin: AdminUser, settings: AppSettings) -> list[DocumentOut]:
    return [DocumentOut(**d) for d in _call("rag.list", settings)]


@router.delete("/documents/{doc_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_document(doc_id: str, admin: AdminUser, db: DbSession, settings: AppSettings) -> None:
    out = _call("rag.delete", settings, doc_id=doc_id)
    if not out["deleted"]:
        raise InputNotFound("document not found", {"doc_id": doc_id})
    audit(db, admin, "knowledge.delete", "document", doc_id, chunks=out["chunks"])
    db.commit()


@router.post("/search", response_model=SearchOut)
def search(body: SearchIn, user: CurrentUser, db: DbSession, settings: AppSettings) -> SearchOut:
    """Hybrid search over the knowledge base (any signed-in user)."""
    t0 = time.perf_counter()
    out = _call("rag.search", settings, query=body.query, k=body.k, language=body.language, filters=body.filters)
    audit(db, user, "knowledge.search", "knowledge", None, hits=len(out["hits"]))  # ids only, never the query
    db.commit()
    return SearchOut(
        hits=[HitOut(**{k: h[k] for k in HitOut.model_fields}) for h in out["hits"]],
        nothing_relevant=out["nothing_relevant"],
        query_language=out["query_language"],
        took_ms=round((time.perf_counter() - t0) * 1000, 1),
    )
