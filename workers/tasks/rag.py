"""rag.* tasks: search, ingest, list, show, delete and stats on the rag pool's knowledge base.

The API and the admin CLI send these by name; the engine (embedder + store + BM25) is loaded once per
worker process (workers/engines/rag.py). Results are plain JSON. Bad input raises a typed error of
workers/core/errors.py (EmptyInput, InputTooLarge, InputError), declared in `throws=` so the worker logs it as
an expected failure, not a crash; the caller (app/task_client.py) gets the same class back, with its code
and HTTP status.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from workers import engines
from workers.celery_app import celery_app
from workers.core.errors import EmptyInput, InputError, InputTooLarge, MedvoiceError
from workers.core.settings import get_settings
from workers.engines.rag import store_errors

log = logging.getLogger("medvoice.tasks.rag")

MAX_K = 50
MAX_QUERY_CHARS = 4000


def _kb():  # noqa: ANN202
    return engines.get("rag")


@celery_app.task(name="rag.search", throws=(MedvoiceError,))
def search(query: str, k: int = 5, language: str | None = None, filters: dict | None = None) -> dict[str, Any]:
    """{query, k, language?, filters?: {source, tags}} → {hits: [...], nothing_relevant, ...}."""
    if not isinstance(query, str) or not query.strip():
        raise EmptyInput("query is empty", {"field": "query"})
    if len(query) > MAX_QUERY_CHARS:
        raise InputTooLarge(
            f"query longer than {MAX_QUERY_CHARS} characters", {"field": "query", "max_chars": MAX_QUERY_CHARS}
        )
    if language not in (None, "", "en", "zh"):
        raise InputError("language must be en or zh", {"field": "language"})
    if filters is not None and not isinstance(filters, dict):
        raise InputError('filters must be an object such as {"source": ..., "tags": [...]}', {"field": "filters"})
    try:
        k = max(1, min(int(k), MAX_K))
    except (TypeError, ValueError):
        raise InputError(f"k must be an integer from 1 to {MAX_K}", {"field": "k"}) from None
    with store_errors(get_settings()):
        res = _kb().search(query, k=k, language=language or None, filters=filters or None)
    log.info(
        "rag.search: %d hits, nothing_relevant=%s, %.1f ms",
        len(res.hits),
        res.nothing_relevant,
        res.timings_ms.get("total", 0.0),
    )
    return res.as_dict()


@celery_app.task(name="rag.ingest", throws=(MedvoiceError,))
def ingest(
    paths: list[str],
    source: str | None = None,
    date: str | None = None,
    tags: list[str] | None = None,
    doc_id: str | None = None,
) -> dict[str, Any]:
    """Ingest files/folders by path (on a filesystem this worker shares); returns the ingest summary."""
    from knowledge.loaders import LoadError, load_file

    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise InputError("paths must be a list of file or folder paths", {"field": "paths"})
    if doc_id is not None and len(paths) != 1:
        raise InputError("an explicit doc_id applies to exactly one file", {"field": "paths"})
    kb = _kb()
    if doc_id is not None:
        # One uploaded file under a caller-chosen id.
        from knowledge.base import IngestItem, IngestReport

        t0 = time.perf_counter()
        report = IngestReport()
        p = Path(paths[0])
        try:
            if p.suffix.lower() == ".jsonl":
                raise LoadError("an explicit id applies to one document; .jsonl carries its own ids")
            report.items.append(
                kb.ingest_document(load_file(p, source=source, date_override=date, tags=tags, doc_id=doc_id))
            )
        except LoadError as exc:
            report.items.append(IngestItem("", "failed", 0, str(p), str(exc)))
        report.seconds = time.perf_counter() - t0
        return _changed(kb, report.summary())
    report = kb.ingest_paths([Path(p) for p in paths], source=source, date=date, tags=tags)
    return _changed(kb, report.summary())


def _changed(kb, summary: dict[str, Any]) -> dict[str, Any]:  # noqa: ANN001
    """After a write, rebuild BM25 and the ASR vocabulary now, in the background, rather than at the next
    search: the asr pool reads the vocabulary before any search happens."""
    if summary.get("added") or summary.get("updated") or summary.get("deleted"):
        threading.Thread(target=kb.refresh, name="kb-refresh-after-write", daemon=True).start()
    return summary


@celery_app.task(name="rag.list", throws=(MedvoiceError,))
def list_documents() -> list[dict[str, Any]]:
    return [d.as_dict() for d in _kb().list_documents()]


@celery_app.task(name="rag.show", throws=(MedvoiceError,))
def show(doc_id: str) -> dict[str, Any] | None:
    return _kb().get_document(doc_id)


@celery_app.task(name="rag.delete", throws=(MedvoiceError,))
def delete(doc_id: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    n = _kb().delete(doc_id)
    return _changed(
        _kb(), {"doc_id": doc_id, "deleted": n > 0, "chunks": n, "ms": round((time.perf_counter() - t0) * 1000, 1)}
    )


@celery_app.task(name="rag.reindex", throws=(MedvoiceError,))
def reindex() -> dict[str, Any]:
    return _kb().reindex()


@celery_app.task(name="rag.stats", throws=(MedvoiceError,))
def stats() -> dict[str, Any]:
    return _kb().stats()
