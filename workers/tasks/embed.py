"""rag.embed: texts → L2-normalised vectors from the knowledge base's embedder (batched)."""

from __future__ import annotations

import logging
from typing import Any

from workers import engines
from workers.celery_app import celery_app
from workers.core.errors import EmptyInput, InputError, InputTooLarge, MedvoiceError
from workers.core.settings import get_settings

log = logging.getLogger("medvoice.tasks.embed")
MAX_CHARS = 8000


@celery_app.task(name="rag.embed", bind=True, throws=(MedvoiceError,))
def embed(self, texts: list[str] | str, kind: str = "passage") -> dict[str, Any]:  # noqa: ANN001
    s = get_settings()
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InputError("texts must be a list of strings", {"field": "texts"})
    if kind not in ("passage", "query"):
        raise InputError("kind must be 'passage' or 'query'", {"field": "kind"})
    if not texts or any(not t.strip() for t in texts):
        raise EmptyInput("every text must be non-empty", {"field": "texts"})
    if len(texts) > s.embed_max_texts:
        raise InputTooLarge(f"at most {s.embed_max_texts} texts per call", {"count": len(texts)})
    if any(len(t) > MAX_CHARS for t in texts):
        raise InputTooLarge(f"a text exceeds {MAX_CHARS} characters", {"max_chars": MAX_CHARS})
    engine = engines.get("embed")
    vecs, seconds = engine.embed(texts, kind=kind)
    log.info("rag.embed task=%s n=%d kind=%s %.3fs", self.request.id, len(texts), kind, seconds)
    return {
        "model": engine.name,
        "dim": engine.dim,
        "vectors": [[round(float(x), 6) for x in v] for v in vecs],
        "timings": {"embed_s": round(seconds, 4), "per_s": round(len(texts) / seconds, 1) if seconds else None},
    }
