"""The knowledge base end to end in one process: real MiniLM embeddings, real Chroma, real BM25."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import pytest

from knowledge.base import KnowledgeBase
from knowledge.config import KBConfig
from knowledge.store import StoreBusy
from tests.knowledge.kb_fixtures import HTML, MD, write_docx, write_pdf

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder():
    from knowledge.embedders import load_embedder

    return load_embedder("sentence-transformers", threads=1)


@pytest.fixture
def kb(tmp_path, embedder):
    k = KnowledgeBase.open(KBConfig(path=tmp_path / "kb", refresh_interval_s=0.0), embedder=embedder)
    yield k
    k.close()


def corpus(root: Path) -> Path:
    d = root / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "htn.md").write_text(MD)
    (d / "asthma.html").write_text(HTML)
    (d / "sub" / "fever.txt").write_text(
        "Fever in children\nGive paracetamol by body weight. See a doctor after 3 days."
    )
    write_docx(d / "gout.docx", "Gout", [("Acute attack", ["Colchicine or NSAIDs treat an acute gout attack."])])
    write_pdf(d / "copd.pdf", ["COPD management", "Long-acting bronchodilators improve breathlessness."], title="COPD")
    rows = [
        {
            "id": "zh-dm",
            "title": "糖尿病",
            "text": "糖尿病患者应控制饮食。二甲双胍是常用的一线药物。",
            "source": "zh-guide",
            "date": "2023-01-01",
            "tags": ["endocrine"],
        },
        {
            "id": "en-dm",
            "title": "Diabetes",
            "text": "Metformin is the usual first medicine for type 2 diabetes.",
            "source": "guide",
            "date": "2023-01-01",
            "tags": ["endocrine"],
        },
    ]
    (d / "bulk.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    (d / "broken.pdf").write_bytes(b"%PDF-1.4 truncated")
    return d


def test_every_format_ingests_bad_file_skipped_with_reason(kb, tmp_path):
    d = corpus(tmp_path)
    report = kb.ingest_paths([d])
    s = report.summary()
    assert s["added"] == 7 and s["failed"] == 1
    assert s["failures"][0]["path"].endswith("broken.pdf") and "unreadable PDF" in s["failures"][0]["reason"]
    docs = {r.doc_id: r for r in kb.list_documents()}
    assert len(docs) == 7 and kb.store.count() == sum(r.chunks for r in docs.values())
    assert {r.title for r in docs.values()} >= {"Hypertension guide", "Asthma care", "Gout", "COPD", "糖尿病"}
    # each format can be found by its content
    for q, title in [
        ("ACE inhibitors first-line therapy", "Hypertension guide"),
        ("inhaled corticosteroids", "Asthma care"),
        ("paracetamol dose for a child with fever", "Fever in children"),
        ("colchicine gout attack", "Gout"),
        ("bronchodilators for COPD", "COPD"),
    ]:
        res = kb.search(q, k=3)
        assert res.hits and res.hits[0].title == title, (q, [h.title for h in res.hits])


def test_reingest_is_idempotent_and_ids_stable(kb, tmp_path):
    d = corpus(tmp_path)
    kb.ingest_paths([d])
    before = {r.doc_id: (r.content_hash, r.ingested_at) for r in kb.list_documents()}
    ids_before = sorted(kb.store.chunks.get(include=[])["ids"])
    gen = kb.store.generation()
    s = kb.ingest_paths([d]).summary()
    assert (s["added"], s["updated"], s["unchanged"], s["chunks"]) == (0, 0, 7, 0)
    assert {r.doc_id: (r.content_hash, r.ingested_at) for r in kb.list_documents()} == before
    assert sorted(kb.store.chunks.get(include=[])["ids"]) == ids_before
    assert kb.store.generation() == gen  # nothing was written


def test_changed_file_replaces_its_chunks(kb, tmp_path):
    p = tmp_path / "note.md"
    long = "\n\n".join(
        f"## Part {i}\n" + " ".join(f"Statin fact {i}.{j} about cholesterol." for j in range(12)) for i in range(6)
    )
    p.write_text("# Lipids\n\n" + long)
    first = kb.ingest_paths([p]).summary()["documents"][0]
    assert first["status"] == "added" and first["chunks"] >= 6
    p.write_text("# Lipids\n\nEzetimibe lowers LDL cholesterol when statins are not enough.")
    second = kb.ingest_paths([p]).summary()["documents"][0]
    assert second == {"doc_id": first["doc_id"], "status": "updated", "chunks": 1}
    got = kb.store.chunks.get(where={"doc_id": first["doc_id"]}, include=["documents"])
    assert got["ids"] == [f"{first['doc_id']}#00000"] and "Ezetimibe" in got["documents"][0]
    res = kb.search("statin fact about cholesterol", k=5)
    assert all("Statin fact" not in h.text for h in res.hits)  # old chunks are gone from both indexes


def test_delete_removes_all_chunks_fast(kb, tmp_path):
    kb.ingest_paths([corpus(tmp_path)])
    doc = next(r for r in kb.list_documents() if r.title == "Hypertension guide")
    t0 = time.perf_counter()
    n = kb.delete(doc.doc_id)
    took = time.perf_counter() - t0
    assert n == doc.chunks and took < 1.0
    assert kb.store.chunks.get(where={"doc_id": doc.doc_id}, include=[])["ids"] == []
    assert kb.store.get_document(doc.doc_id) is None
    assert all(h.doc_id != doc.doc_id for h in kb.search("ACE inhibitors hypertension", k=10).hits)
    assert kb.delete(doc.doc_id) == 0


def test_decay_ranks_older_copy_lower_with_exact_formula(kb, tmp_path):
    text = "Warfarin dosing is guided by the INR, usually aiming for 2 to 3."
    rows = [
        {"id": "new", "title": "Anticoagulation", "text": text, "date": "2025-06-01"},
        {"id": "old", "title": "Anticoagulation", "text": text, "date": "2015-06-01"},
    ]
    p = tmp_path / "two.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    kb.ingest_paths([p])
    today = date(2026, 6, 1)
    res = kb.search("warfarin INR target", k=2, today=today)
    assert [h.doc_id for h in res.hits] == ["new", "old"]
    new, old = res.hits
    assert new.similarity == pytest.approx(old.similarity, abs=1e-5)  # same text, same relevance
    for h, d in ((new, date(2025, 6, 1)), (old, date(2015, 6, 1))):
        expected = 0.9 ** ((today - d).days / 365.25)
        assert h.decay == pytest.approx(expected, abs=1e-6)
        assert h.score == pytest.approx(h.similarity * expected, abs=1e-5)
    off = kb.search("warfarin INR target", k=2, today=today, decay=False)
    assert all(h.decay == 1.0 for h in off.hits)


def test_chinese_query_found_through_lexical_side(kb, tmp_path):
    kb.ingest_paths([corpus(tmp_path)])
    res = kb.search("糖尿病用什么药", k=3)
    assert res.query_language == "zh"
    assert not res.dense_used  # MiniLM cannot read Chinese: its [UNK] vectors are left out of the fusion
    assert res.hits[0].doc_id == "zh-dm" and res.hits[0].lexical > 0


def test_filters_and_nothing_relevant(kb, tmp_path):
    kb.ingest_paths([corpus(tmp_path)])
    res = kb.search("first medicine for diabetes", k=5, filters={"tags": ["endocrine"]})
    assert {h.doc_id for h in res.hits} <= {"zh-dm", "en-dm"} and res.hits[0].doc_id == "en-dm"
    res = kb.search("first medicine for diabetes", k=5, filters={"source": "zh-guide"})
    assert {h.doc_id for h in res.hits} <= {"zh-dm"}
    none = kb.search("quarterly revenue of the shipping industry in Norway", k=5)
    assert none.nothing_relevant and none.hits == []


def test_reindex_keeps_every_chunk_searchable(kb, tmp_path):
    kb.ingest_paths([corpus(tmp_path)])
    n = kb.store.count()
    out = kb.reindex()
    assert out["chunks"] == n and kb.store.count() == n
    assert kb.search("colchicine gout attack", k=1).hits[0].title == "Gout"


def test_embedded_store_refuses_a_second_process_holder(kb, tmp_path):
    # The same process can't take the flock twice either: a second store on the same path is refused.
    with pytest.raises(StoreBusy, match="not process-safe"):
        KnowledgeBase.open(KBConfig(path=tmp_path / "kb"), embedder=kb.embedder)
