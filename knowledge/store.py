"""The Chroma store: chunk vectors (HNSW, cosine) and a small document registry.

Two deployments:
- **embedded** (`KBConfig.path`, chromadb.PersistentClient): one process only. Chroma's embedded client is
  not process-safe: a second process that opens the same directory keeps its own cached HNSW index and does
  not see the first one's writes, and two writers can corrupt the index. This store therefore takes an
  exclusive lock on the directory; a second process gets `StoreBusy` instead of silent corruption.
- **server** (`KBConfig.chroma_url`, chromadb.HttpClient against `chroma run --path DIR`): any number of
  processes (rag workers on several hosts, the admin CLI) read and write at once; the server is the one
  writer of the files.

Both keep a `generation` stamp (new on every write) in the registry so that a reader notices another process's writes
and refreshes its BM25 index.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from knowledge.chunking import Chunk, chunk_id
from knowledge.config import KBConfig
from knowledge.loaders import Document

log = logging.getLogger("medvoice.knowledge.store")

STATE_ID = "__state__"


class StoreBusy(RuntimeError):
    """The embedded store is open in another process."""


@dataclass
class DocRecord:
    doc_id: str
    title: str
    source: str
    date: str
    tags: list[str]
    language: str
    content_hash: str
    chunks: int
    path: str
    ingested_at: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _slug(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "-", name).strip("-").lower()[:60]


def date_ordinal(iso: str) -> int:
    try:
        return date.fromisoformat(iso).toordinal() if iso else 0
    except ValueError:
        return 0


def _chroma_settings():  # noqa: ANN202
    os.environ["ANONYMIZED_TELEMETRY"] = "False"
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False, allow_reset=False)


class ChromaStore:
    def __init__(self, cfg: KBConfig, embedder_name: str, dim: int) -> None:
        import chromadb

        self.cfg = cfg
        self.dim = dim
        self._lock_fh = None
        if cfg.chroma_url:
            u = urlparse(cfg.chroma_url)
            self.client = chromadb.HttpClient(
                host=u.hostname or "127.0.0.1",
                port=u.port or 8000,
                ssl=u.scheme == "https",
                settings=_chroma_settings(),
            )
            self.location = cfg.chroma_url
        else:
            root = Path(cfg.path)
            root.mkdir(parents=True, exist_ok=True)
            self._take_lock(root)
            self.client = chromadb.PersistentClient(path=str(root / "chroma"), settings=_chroma_settings())
            self.location = str(root / "chroma")
        base = f"{cfg.collection}__{_slug(embedder_name)}"
        self.chunks = self.client.get_or_create_collection(
            name=base,
            embedding_function=None,
            configuration={
                "hnsw": {
                    "space": "cosine",
                    "max_neighbors": cfg.hnsw_m,
                    "ef_construction": cfg.hnsw_ef_construction,
                    "ef_search": cfg.hnsw_ef_search,
                }
            },
            metadata={"embedder": embedder_name, "dim": dim},
        )
        self.docs = self.client.get_or_create_collection(name=f"{base}__docs", embedding_function=None)
        self.max_batch = int(getattr(self.client, "get_max_batch_size", lambda: 5000)() or 5000)

    # -- process safety ---------------------------------------------------------------------------------

    def _take_lock(self, root: Path) -> None:
        lock_path = root / ".medvoice-kb.lock"
        fh = open(lock_path, "a+")  # noqa: SIM115 - held for the store's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise StoreBusy(
                f"the embedded knowledge store at {root} is open in {holder}; Chroma's embedded client is not "
                "process-safe. Run `medvoice kb server` and set MEDVOICE_KB_CHROMA_URL for every process, "
                "or send the work to the rag worker that holds it"
            ) from exc
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._lock_fh = fh

    def close(self) -> None:
        if self._lock_fh is not None:
            try:
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            finally:
                self._lock_fh.close()
                self._lock_fh = None

    # -- registry ---------------------------------------------------------------------------------------

    def generation(self) -> int:
        got = self.docs.get(ids=[STATE_ID], include=["metadatas"])
        if not got["ids"]:
            return 0
        return int((got["metadatas"][0] or {}).get("generation", 0))

    def _bump(self) -> int:
        # A fresh unique value rather than a counter: two processes writing at once cannot both write "n+1"
        # and leave a reader that saw the first write unaware of the second.
        gen = time.time_ns() ^ random.getrandbits(20)
        self.docs.upsert(
            ids=[STATE_ID], embeddings=[[1.0]], metadatas=[{"kind": "state", "generation": gen, "at": time.time()}]
        )
        return gen

    def get_document(self, doc_id: str) -> DocRecord | None:
        got = self.docs.get(ids=[doc_id], include=["metadatas"])
        if not got["ids"]:
            return None
        return _record(doc_id, got["metadatas"][0])

    def list_documents(self) -> list[DocRecord]:
        out = []
        offset = 0
        while True:
            got = self.docs.get(where={"kind": "doc"}, include=["metadatas"], limit=5000, offset=offset)
            out.extend(_record(i, m) for i, m in zip(got["ids"], got["metadatas"]))
            if len(got["ids"]) < 5000:
                break
            offset += 5000
        return sorted(out, key=lambda r: r.doc_id)

    # -- writes -----------------------------------------------------------------------------------------

    def get_documents(self, doc_ids: list[str]) -> dict[str, DocRecord]:
        out: dict[str, DocRecord] = {}
        for i in range(0, len(doc_ids), self.max_batch):
            got = self.docs.get(ids=doc_ids[i : i + self.max_batch], include=["metadatas"])
            out.update({d: _record(d, m) for d, m in zip(got["ids"], got["metadatas"])})
        return out

    def upsert_documents(self, batch: list[tuple[Document, list[Chunk], np.ndarray, str, int]]) -> int:
        """Write documents' chunks (same ids are overwritten), drop chunks a document no longer has, record
        the documents, and bump the generation once. batch: (doc, chunks, vectors, content_hash, old_chunks)."""
        ids: list[str] = []
        texts: list[str] = []
        metas: list[dict[str, Any]] = []
        vecs: list[np.ndarray] = []
        records: list[tuple[str, dict[str, Any]]] = []
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for doc, chunks, vectors, content_hash, _ in batch:
            date_ord = date_ordinal(doc.date)
            for c in chunks:
                m: dict[str, Any] = {
                    "doc_id": doc.doc_id,
                    "chunk_index": c.index,
                    "title": doc.title,
                    "source": doc.source,
                    "date": doc.date,
                    "date_ord": date_ord,
                    "content_hash": content_hash,
                    "language": c.language,
                    "context": c.context,
                }
                if doc.tags:
                    m["tags"] = list(doc.tags)
                ids.append(c.chunk_id)
                texts.append(c.text)
                metas.append(m)
            vecs.append(np.asarray(vectors, dtype=np.float32).reshape(len(chunks), -1))
            records.append(
                (
                    doc.doc_id,
                    {
                        "kind": "doc",
                        "title": doc.title,
                        "source": doc.source,
                        "date": doc.date,
                        "tags": ",".join(doc.tags),
                        "language": doc.language,
                        "content_hash": content_hash,
                        "chunks": len(chunks),
                        "path": doc.path,
                        "ingested_at": now,
                    },
                )
            )
        if ids:
            allv = np.concatenate(vecs, axis=0)
            for i in range(0, len(ids), self.max_batch):
                sl = slice(i, i + self.max_batch)
                self.chunks.upsert(ids=ids[sl], embeddings=allv[sl], documents=texts[sl], metadatas=metas[sl])
        for doc, chunks, _, _, old_chunks in batch:
            if old_chunks > len(chunks):
                self.chunks.delete(ids=[chunk_id(doc.doc_id, i) for i in range(len(chunks), old_chunks)])
        for i in range(0, len(records), self.max_batch):
            part = records[i : i + self.max_batch]
            self.docs.upsert(ids=[r[0] for r in part], embeddings=[[1.0]] * len(part), metadatas=[r[1] for r in part])
        return self._bump()

    def delete_document(self, doc_id: str) -> int:
        """Delete a document and all its chunks; returns how many chunks it had (0 if unknown)."""
        rec = self.get_document(doc_id)
        if rec is None:
            return 0
        # By id (the registry knows how many chunks the document has): no metadata scan over the collection.
        self.chunks.delete(ids=[chunk_id(doc_id, i) for i in range(rec.chunks)])
        self.docs.delete(ids=[doc_id])
        self._bump()
        return rec.chunks

    def bump(self) -> int:
        return self._bump()

    # -- reads ------------------------------------------------------------------------------------------

    def count(self) -> int:
        return int(self.chunks.count())

    def iter_chunks(self, batch: int = 5000, include_embeddings: bool = False) -> Iterator[dict[str, Any]]:
        include = ["documents", "metadatas"] + (["embeddings"] if include_embeddings else [])
        offset = 0
        while True:
            got = self.chunks.get(include=include, limit=batch, offset=offset)
            ids = got["ids"]
            if not ids:
                break
            yield got
            if len(ids) < batch:
                break
            offset += batch

    def query(self, vector: np.ndarray, n: int, where: dict | None = None) -> tuple[list[str], list[float]]:
        # No count() first: it costs ~8 ms at 100k chunks, and Chroma returns fewer results when it has fewer.
        try:
            res = self.chunks.query(
                query_embeddings=[np.asarray(vector, dtype=np.float32)],
                n_results=n,
                where=where,
                include=["distances"],
            )
        except Exception:  # an empty collection (or an empty filtered set) has nothing to return
            if self.count() == 0:
                return [], []
            raise
        ids = res["ids"][0]
        sims = [1.0 - float(d) for d in res["distances"][0]]  # cosine distance → cosine similarity
        return ids, sims

    def get_chunks(self, ids: list[str], embeddings: bool = False, documents: bool = True) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        include = ["metadatas"] + (["documents"] if documents else []) + (["embeddings"] if embeddings else [])
        got = self.chunks.get(ids=ids, include=include)
        out = {}
        for i, cid in enumerate(got["ids"]):
            row = {"text": got["documents"][i] if documents else None, "meta": got["metadatas"][i]}
            if embeddings:
                row["embedding"] = np.asarray(got["embeddings"][i], dtype=np.float32)
            out[cid] = row
        return out

    def disk_bytes(self) -> int | None:
        if self.cfg.chroma_url:
            return None
        root = Path(self.location)
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _record(doc_id: str, m: dict[str, Any]) -> DocRecord:
    return DocRecord(
        doc_id=doc_id,
        title=str(m.get("title", "")),
        source=str(m.get("source", "")),
        date=str(m.get("date", "")),
        tags=[t for t in str(m.get("tags", "")).split(",") if t],
        language=str(m.get("language", "")),
        content_hash=str(m.get("content_hash", "")),
        chunks=int(m.get("chunks", 0)),
        path=str(m.get("path", "")),
        ingested_at=str(m.get("ingested_at", "")),
    )
