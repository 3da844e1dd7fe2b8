"""In-memory BM25 (bm25s) over all chunks, with per-chunk metadata arrays for filters.

Scores are also given on an absolute 0..1 scale: a chunk's BM25 score divided by the best score any chunk
could reach for the query's terms (the sum over query terms of that term's highest score in the index),
so a lexical match can be compared across queries and against the relevance floor.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from knowledge.text import lexical_tokens

log = logging.getLogger("medvoice.knowledge.lexical")


@dataclass
class LexicalIndex:
    ids: list[str] = field(default_factory=list)
    sources: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    tags: list[frozenset[str]] = field(default_factory=list)
    retriever: object | None = None
    token_max: np.ndarray | None = None
    row: dict[str, int] = field(default_factory=dict)
    built_s: float = 0.0

    dates: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))  # date ordinals, 0 = none

    @classmethod
    def build(
        cls, ids: list[str], texts: list[str], sources: list[str], tags: list[list[str]], dates: list[int] | None = None
    ) -> LexicalIndex:
        b = LexicalBuilder()
        b.add(ids, texts, sources, tags, dates or [0] * len(ids))
        return b.finish()

    def date_ordinal(self, chunk_id: str) -> int | None:
        i = self.row.get(chunk_id)
        return None if i is None else int(self.dates[i])

    def __len__(self) -> int:
        return len(self.ids)

    def mask(self, sources: list[str] | None = None, tags: list[str] | None = None) -> np.ndarray | None:
        if not sources and not tags:
            return None
        m = np.ones(len(self.ids), dtype=np.float32)
        if sources:
            m *= np.isin(self.sources, list(sources)).astype(np.float32)
        if tags:
            want = set(tags)
            m *= np.fromiter((1.0 if want & t else 0.0 for t in self.tags), dtype=np.float32, count=len(self.tags))
        return m

    def scores(self, query: str, mask: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """BM25 score of every chunk for the query, and the best score reachable for its terms."""
        if self.retriever is None:
            return np.zeros(0, dtype=np.float32), 0.0
        r = self.retriever
        token_ids = r.get_tokens_ids(lexical_tokens(query))  # type: ignore[attr-defined]
        if not token_ids:
            return np.zeros(len(self.ids), dtype=np.float32), 0.0
        s = r.get_scores_from_ids(token_ids, weight_mask=mask)  # type: ignore[attr-defined]
        upper = float(self.token_max[np.asarray(token_ids)].sum()) if self.token_max is not None else 0.0
        return np.asarray(s, dtype=np.float32), upper


class LexicalBuilder:
    """Builds the index batch by batch: each chunk's tokens become an int32 array of vocabulary ids at once, so
    100k chunks never sit in memory as Python token lists."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.vocab: dict[str, int] = {}
        self.token_ids: list[np.ndarray] = []
        self.ids: list[str] = []
        self.sources: list[str] = []
        self.tags: list[frozenset[str]] = []
        self.dates: list[int] = []

    def add(
        self, ids: list[str], texts: list[str], sources: list[str], tags: list[list[str]], dates: list[int]
    ) -> None:
        vocab = self.vocab
        for text in texts:
            toks = lexical_tokens(text)
            self.token_ids.append(
                np.fromiter((vocab.setdefault(t, len(vocab)) for t in toks), dtype=np.int32, count=len(toks))
            )
        self.ids.extend(ids)
        self.sources.extend(sources)
        self.tags.extend(frozenset(t) for t in tags)
        self.dates.extend(int(d or 0) for d in dates)

    def finish(self) -> LexicalIndex:
        bm25s = _bm25s()
        idx = LexicalIndex(
            ids=self.ids,
            sources=np.array(self.sources, dtype=object),
            tags=self.tags,
            dates=np.array(self.dates, dtype=np.int32),
        )
        idx.row = {cid: i for i, cid in enumerate(self.ids)}
        if self.ids and self.vocab:
            r = bm25s.BM25()
            r.index((self.token_ids, dict(self.vocab)), show_progress=False)
            idx.retriever = r
            data, indptr = r.scores["data"], r.scores["indptr"]
            tmax = np.zeros(len(indptr) - 1, dtype=np.float32)
            nonempty = np.diff(indptr) > 0
            if data.size:
                tmax[nonempty] = np.maximum.reduceat(data, indptr[:-1][nonempty])
            idx.token_max = tmax
        self.token_ids = []
        idx.built_s = time.perf_counter() - self.t0
        log.info("bm25 index: %d chunks, %d terms in %.2fs", len(idx.ids), len(self.vocab), idx.built_s)
        return idx


def _bm25s():  # noqa: ANN202 - the bm25s module
    """bm25s, imported without numba: it imports numba and LLVM (~60 MB resident in every rag process) for a
    `retrieve` backend this index never calls (it scores with `get_scores_from_ids`, in numpy either way), and
    falls back without them. A process that already has numba (Coqui's librosa) keeps it."""
    hide = "bm25s" not in sys.modules and "numba" not in sys.modules
    if hide:
        sys.modules["numba"] = None  # type: ignore[assignment] - makes `import numba` raise ImportError
    try:
        import bm25s
    finally:
        if hide:
            del sys.modules["numba"]
    return bm25s
