"""Embeddings engine for `rag.embed`: the knowledge base's embedder (knowledge/embedders.py), batched,
L2-normalised vectors.

It shares the rag pool's KnowledgeBase embedder when this process has one (one model in memory, and
query vectors that match the indexed ones); otherwise it loads the same embedder itself through
`knowledge.embedders.load_embedder` with the verified model path. No second implementation lives here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from workers import engines
from workers.core.errors import EngineUnavailable
from workers.core.settings import Settings

log = logging.getLogger("medvoice.engines.embed")


class EmbedEngine:
    def __init__(self, settings: Settings, embedder: Any, shared: bool) -> None:
        self.settings = settings
        self.embedder = embedder
        self.shared = shared
        self.name = embedder.name
        self.dim = int(embedder.dim)

    def embed(self, texts: list[str], kind: str = "passage", batch_size: int | None = None) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        if kind == "query":
            vecs = (
                np.stack([self.embedder.embed_query(t) for t in texts])
                if texts
                else np.zeros((0, self.dim), np.float32)
            )
        else:
            vecs = self.embedder.embed_passages(list(texts), batch_size=batch_size or self.settings.embed_batch_size)
        return np.asarray(vecs, dtype=np.float32), time.perf_counter() - t0


def _own_embedder(settings: Settings) -> Any:
    from workers.modelfiles import resolve_embed

    path = resolve_embed(settings)  # verified; the shipped model is then loaded by its package's own path
    custom = settings.kb_embedder_path or settings.embed_model_path
    try:
        from knowledge.embedders import load_embedder
    except ImportError as exc:  # pragma: no cover
        raise EngineUnavailable(f"knowledge.embedders is not available: {exc}") from exc
    return load_embedder(settings.kb_embedder, str(path) if (path and custom) else None, settings.rag_threads)


@engines.register("embed", pool="rag")
def load(settings: Settings) -> EmbedEngine:
    from workers.core.refs import force_offline

    force_offline()
    from workers.modelfiles import resolve_embed

    resolve_embed(settings)  # the shipped model's files are verified whoever loads them
    # The rag engine loads first in a rag worker (its task module registers first). Only an engine that is
    # already loaded is shared: loading the rag engine from here would open (and lock) the knowledge store
    # in processes that only want vectors, such as a bench or the CLI.
    if "rag" in engines.loaded():
        kb = engines.get("rag")
        embedder = getattr(kb, "embedder", None)
        if embedder is not None:
            return EmbedEngine(settings, embedder, shared=True)
    return EmbedEngine(settings, _own_embedder(settings), shared=False)
