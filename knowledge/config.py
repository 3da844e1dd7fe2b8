"""Knowledge-base configuration as a plain dataclass (the caller maps its own settings onto it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class KBConfig:
    # Where the store lives: an embedded Chroma directory, or a Chroma server (`chroma run`) URL.
    # Chroma's embedded PersistentClient is not process-safe: use the server whenever more than one
    # process (rag workers, the admin CLI) opens the knowledge base at the same time.
    path: Path = Path("./var/knowledge")
    chroma_url: str | None = None  # e.g. http://127.0.0.1:8001
    collection: str = "medvoice_kb"

    # Embedder (knowledge.embedders.load_embedder)
    embedder: str = "sentence-transformers"
    embedder_path: str | None = None
    threads: int | None = 1

    # Chunking, in tokens of the embedding model
    chunk_tokens: int = 200
    chunk_overlap_tokens: int = 40

    # Chroma HNSW (cosine space)
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    hnsw_ef_search: int = 100

    # Hybrid retrieval
    fusion: str = "weighted"  # "weighted" (score fusion) or "rrf" (reciprocal rank)
    dense_weight: float = 0.8  # weighted fusion: dense share when the embedder reads the query (bench/retrieval.py)
    rrf_k: int = 60
    candidates: int = 50  # per side, before fusion
    relevance_floor: float = 0.25  # fused similarity below this is "nothing relevant"

    # Time decay: final = fused_similarity * decay_base ** (age_days / decay_unit_days)
    decay_base: float = 0.9
    decay_unit_days: float = 365.25
    decay: bool = True

    # How often a reader checks whether another process changed the store (BM25 refresh), seconds
    refresh_interval_s: float = 1.0
    embed_batch: int = 32
    # Ingestion writes documents in batches (one embedding call, one Chroma upsert, one generation bump)
    ingest_batch_docs: int = 64
    ingest_batch_tokens: int = 50_000
    languages: list[str] = field(default_factory=lambda: ["en", "zh"])
