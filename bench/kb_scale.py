"""Knowledge base at scale, and Chroma's multi-process behaviour.

    python bench/kb_scale.py scale [--chunks 100000] [--queries 300]
    python bench/kb_scale.py multiprocess

scale: a store of N chunks (default 100,000) through the product's ingestion path (chunking with the
MiniLM tokenizer, Chroma HNSW upserts, document registry) and its query path (MiniLM query embedding +
HNSW + BM25 over all chunks + fusion + decay), one thread for torch and BLAS.
 - The first ~3,500 chunks are MedQuAD's 1,610 passages with their real MiniLM vectors (var/bench-cache,
   written by bench/retrieval.py; embedded here if missing).
 - The rest are synthetic: documents of 10 sections whose text is sentences drawn at random from MedQuAD
   and PubMedQA, and whose vectors are a mix of two real passage vectors plus noise, re-normalised.
   MiniLM embeds ~30 chunks/s on these 2 cores, so embedding 100k chunks for real would take about an hour;
   the ingestion rate printed excludes embedding, and the embedding rate is printed beside it.
Query latency uses real MiniLM query embeddings of MedQuAD questions; recall@5 of MedQuAD questions inside
the 100k store shows the synthetic distractors do not break retrieval.

multiprocess: shows that an embedded PersistentClient does not see another process's writes in queries
(HNSW cached per process), and that clients of one `chroma run` server do.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["ANONYMIZED_TELEMETRY"] = "False"

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def scale(args: argparse.Namespace) -> None:
    import retrieval as R
    from knowledge.base import KnowledgeBase
    from knowledge.config import KBConfig
    from knowledge.embedders import load_embedder
    from knowledge.loaders import Document, Section
    from knowledge.text import split_sentences

    emb = load_embedder("sentence-transformers", threads=1)
    docs, qs = R.load_set("medquad", None)
    pub, _ = R.load_set("pubmedqa", None)
    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="kb-scale-"))
    cfg = KBConfig(path=tmp, embedder="sentence-transformers", threads=1, ingest_batch_docs=500)
    kb = KnowledgeBase.open(cfg, embedder=emb)
    print(f"store: {tmp}  (rss at start {rss_mb():.0f} MB)", flush=True)

    # Real part: MedQuAD with real vectors.
    chunked = [(d, kb.chunk(d)) for d in docs]
    texts = [c.indexed_text for _, cs in chunked for c in cs]
    t = time.perf_counter()
    vecs = R.CachedVectors(emb, Path(args.cache)).passages(texts)
    print(
        f"real part: {len(docs)} MedQuAD passages, {len(texts)} chunks (vectors ready in "
        f"{time.perf_counter() - t:.1f}s)",
        flush=True,
    )
    per, k = [], 0
    for _, cs in chunked:
        per.append(vecs[k : k + len(cs)])
        k += len(cs)
    base_vecs = np.stack([v.mean(0) for v in per])

    sentences = [s for d in docs + pub for s in split_sentences(d.text) if 20 < len(s) < 400]
    rng = random.Random(7)
    nrng = np.random.default_rng(7)

    t_ing = time.perf_counter()
    total = kb.store.count()
    reuse = total >= args.chunks * 0.99
    if reuse:
        print(f"reusing the {total} chunks already in {tmp}: ingestion not measured this run", flush=True)
    for i in range(0, 0 if reuse else len(docs), 500):
        items = kb.ingest_documents(docs[i : i + 500], per[i : i + 500])
        total += sum(it.chunks for it in items)
    n_doc = 0
    while not reuse and total < args.chunks:
        batch_docs, batch_vecs = [], []
        for _ in range(500):
            sections = [
                Section(f"Part {j}", " ".join(rng.choice(sentences) for _ in range(rng.randint(2, 5))))
                for j in range(10)
            ]
            d = Document(
                f"syn{n_doc:06d}",
                f"Synthetic document {n_doc}",
                sections,
                source=rng.choice(["a", "b", "c"]),
                date=f"{rng.randint(2005, 2026)}-{rng.randint(1, 12):02d}-01",
                tags=[rng.choice("xyz")],
            )
            n_doc += 1
            cs = kb.chunk(d)
            mix = base_vecs[nrng.integers(0, len(base_vecs), size=(len(cs), 2))].mean(1)
            mix += nrng.normal(scale=0.03, size=mix.shape)
            mix /= np.linalg.norm(mix, axis=1, keepdims=True)
            batch_docs.append(d)
            batch_vecs.append(mix.astype(np.float32))
        items = kb.ingest_documents(batch_docs, batch_vecs)
        total += sum(it.chunks for it in items)
        el = time.perf_counter() - t_ing
        print(f"  {total:>7d} chunks, {total / el:,.0f} chunks/s, rss {rss_mb():.0f} MB", flush=True)
    ing_s = time.perf_counter() - t_ing
    n_chunks = kb.store.count()
    if not reuse:
        print(
            f"ingested {n_chunks} chunks ({len(docs) + n_doc} documents) in {ing_s:.1f}s: {n_chunks / ing_s:,.0f} "
            f"chunks/s without embedding",
            flush=True,
        )

    t = time.perf_counter()
    kb.refresh(force=True)
    bm25_s = time.perf_counter() - t
    kb.close()
    t = time.perf_counter()
    kb = KnowledgeBase.open(cfg, embedder=emb)  # what a rag worker does at start: open + BM25 over all chunks
    open_s = time.perf_counter() - t
    print(
        f"BM25 build over {n_chunks} chunks {bm25_s:.1f}s; open (store + BM25) {open_s:.1f}s; rss {rss_mb():.0f} MB",
        flush=True,
    )

    # Embedding rate for the record (what real ingestion is bound by)
    sample = texts[:64]
    t = time.perf_counter()
    emb.embed_passages(sample)
    emb_rate = len(sample) / (time.perf_counter() - t)

    qsample = qs[: args.queries]
    for q, _ in qsample[:10]:
        kb.search(q, k=5)  # warm-up
    lat, parts = [], {"embed": [], "dense": [], "lexical": [], "fuse": []}
    hits5 = 0
    for q, gold in qsample:
        t = time.perf_counter()
        res = kb.search(q, k=5)
        lat.append((time.perf_counter() - t) * 1000)
        for key in parts:
            parts[key].append(res.timings_ms.get(key, 0.0))
        hits5 += any(R.passage_key(h.doc_id) in gold for h in res.hits)
    print(f"load average {os.getloadavg()[0]:.1f} (2 cores, shared with other work)", flush=True)
    t = time.perf_counter()
    victim = next(f"syn{i:06d}" for i in range(rng.randint(0, 9000), 20000) if kb.store.get_document(f"syn{i:06d}"))
    t = time.perf_counter()
    n_del = kb.delete(victim)
    del_ms = (time.perf_counter() - t) * 1000
    big = Document(
        "big-doc",
        "Big document",
        [Section(f"S{j}", " ".join(rng.choice(sentences) for _ in range(4))) for j in range(1000)],
        date="2020-01-01",
    )
    cs = kb.chunk(big)
    kb.ingest_documents([big], [base_vecs[nrng.integers(0, len(base_vecs), size=len(cs))]])
    t = time.perf_counter()
    n_big = kb.delete("big-doc")
    big_ms = (time.perf_counter() - t) * 1000
    disk = kb.store.disk_bytes() or 0
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print("\n| measure | value |\n|---|---|")
    rows = [
        ("chunks in store", f"{n_chunks:,} ({len(texts):,} real MedQuAD + synthetic)"),
        (
            "ingestion (chunk + upsert + registry, vectors given)",
            "not measured (reused store)" if reuse else f"{n_chunks / ing_s:,.0f} chunks/s ({ing_s:.0f} s)",
        ),
        ("MiniLM passage embedding, 1 thread", f"{emb_rate:.0f} chunks/s"),
        ("BM25 build (all chunks)", f"{bm25_s:.1f} s"),
        ("open: store + BM25 (rag worker start)", f"{open_s:.1f} s"),
        (
            f"query p50 / p95 ({len(lat)} MedQuAD questions, embed+HNSW+BM25+fusion+decay)",
            f"{pct(lat, 50):.1f} / {pct(lat, 95):.1f} ms",
        ),
        ("  of which embed p50 / p95", f"{pct(parts['embed'], 50):.1f} / {pct(parts['embed'], 95):.1f} ms"),
        ("  HNSW p50 / p95", f"{pct(parts['dense'], 50):.1f} / {pct(parts['dense'], 95):.1f} ms"),
        ("  BM25 p50 / p95", f"{pct(parts['lexical'], 50):.1f} / {pct(parts['lexical'], 95):.1f} ms"),
        ("  fetch + fusion + decay p50 / p95", f"{pct(parts['fuse'], 50):.1f} / {pct(parts['fuse'], 95):.1f} ms"),
        ("MedQuAD passage R@5 inside the full store", f"{hits5 / len(qsample):.3f}"),
        ("kb delete, 10-chunk document", f"{del_ms:.0f} ms ({n_del} chunks)"),
        ("kb delete, 1000-chunk document", f"{big_ms:.0f} ms ({n_big} chunks)"),
        ("RSS now / peak", f"{rss_mb():.0f} / {maxrss:.0f} MB"),
        ("Chroma on disk", f"{disk / 1e6:.0f} MB"),
    ]
    for k_, v in rows:
        print(f"| {k_} | {v} |")
    kb.close()


def _mp_writer(path: str) -> None:
    import chromadb

    c = chromadb.PersistentClient(path=path).get_or_create_collection(
        "mptest", embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
    )
    rng = np.random.default_rng(1)
    c.add(ids=[f"w{i}" for i in range(200)], embeddings=(rng.normal(size=(200, 8)) + 1.0).astype("float32"))


def _mp_fresh(path: str) -> None:
    import chromadb

    c = chromadb.PersistentClient(path=path).get_collection("mptest")
    top3 = c.query(query_embeddings=[[1.0] * 8], n_results=3)["ids"][0]
    print(f"  a new process: count() {c.count()}, query top-3 {top3}", flush=True)


def multiprocess(_: argparse.Namespace) -> None:
    import multiprocessing as mp
    import shutil
    import subprocess

    import chromadb

    ctx = mp.get_context("spawn")
    q = [[1.0] * 8]
    path = tempfile.mkdtemp(prefix="chroma-mp-")
    print(f"chromadb {chromadb.__version__}: embedded PersistentClient, two processes on {path}")
    c = chromadb.PersistentClient(path=path).get_or_create_collection(
        "mptest", embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
    )
    c.add(ids=["r0"], embeddings=[[1.0] * 8])
    c.query(query_embeddings=q, n_results=1)  # this process now holds the HNSW index in memory
    p = ctx.Process(target=_mp_writer, args=(path,))
    p.start()
    p.join()
    print("  another process added 200 vectors (w0..w199)")
    print(
        f"  this process: count() {c.count()}, get(['w0']) {c.get(ids=['w0'])['ids']}, "
        f"query top-3 {c.query(query_embeddings=q, n_results=3)['ids'][0]}  <- metadata sees them, HNSW does not"
    )
    c2 = chromadb.PersistentClient(path=path).get_collection("mptest")
    print(f"  this process, a new client: query top-3 {c2.query(query_embeddings=q, n_results=3)['ids'][0]}")
    p = ctx.Process(target=_mp_fresh, args=(path,))
    p.start()
    p.join()

    binary = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    if not binary:
        print("no `chroma` command: server mode not shown")
        return
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spath = tempfile.mkdtemp(prefix="chroma-srv-")
    srv = subprocess.Popen(
        [binary, "run", "--path", spath, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from chromadb.config import Settings

        for _ in range(100):
            try:
                a = chromadb.HttpClient(host="127.0.0.1", port=port, settings=Settings(anonymized_telemetry=False))
                a.heartbeat()
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.2)
        ca = a.get_or_create_collection("mptest", embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
        ca.add(ids=["r0"], embeddings=[[1.0] * 8])
        ca.query(query_embeddings=q, n_results=1)
        code = (
            "import chromadb,numpy as np;from chromadb.config import Settings;"
            f"c=chromadb.HttpClient(host='127.0.0.1',port={port},settings=Settings(anonymized_telemetry=False))"
            ".get_collection('mptest');r=np.random.default_rng(1);"
            "c.add(ids=[f'w{i}' for i in range(200)],embeddings=(r.normal(size=(200,8))+1.0).astype('float32'))"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
        print(
            f"chroma server (`chroma run`): after another process added 200 vectors, this process's query top-3 "
            f"{ca.query(query_embeddings=q, n_results=3)['ids'][0]}, count() {ca.count()}"
        )
    finally:
        srv.terminate()
        srv.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", nargs="?", default="scale", choices=["scale", "multiprocess"])
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--cache", default=str(ROOT / "var" / "bench-cache"))
    ap.add_argument("--dir", default="", help="store directory (kept; a later run with --dir reuses it)")
    args = ap.parse_args()
    (scale if args.mode == "scale" else multiprocess)(args)


if __name__ == "__main__":
    main()
