"""`make demo`'s own steps against a real worker (all four pools in one process): the sample knowledge base
uploaded as an admin (twice: the second time changes nothing), the question spoken by tts.synthesize, and
the consultation run, followed over SSE, printed and its reply audio saved, exactly as the demo does it."""

from __future__ import annotations

import io

import pytest
import soundfile as sf
from rich.console import Console

from app.cli import demo_steps as steps

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample_kb(api, tokens, pipeline_worker) -> list[dict]:
    return steps.ingest_sample_kb(api, tokens["root"])


def test_sample_kb_is_ingested_once(api, tokens, sample_kb):
    n = len(steps.sample_documents())
    assert [r["status"] for r in sample_kb] == ["added"] * n, sample_kb
    assert all(r["chunks"] > 0 and r["title"] and r["date"] for r in sample_kb)
    again = steps.ingest_sample_kb(api, tokens["root"])
    assert [r["status"] for r in again] == ["unchanged"] * n, "content-hash dedup: a re-run adds nothing"
    listed = api.get("/v1/knowledge/documents", headers=tokens["root"]).json()
    assert sorted(d["doc_id"] for d in listed) == sorted(doc_id for _, doc_id in steps.sample_documents())
    assert sum(d["chunks"] for d in listed) == sum(r["chunks"] for r in sample_kb)


def test_the_old_edition_sinks(api, tokens, sample_kb):
    res = steps.search(api, tokens["ann"], steps.DEFAULT_QUESTION)
    by_doc = {h["doc_id"]: h for h in res["hits"]}
    new, old = by_doc["sample-otitis-media-adults"], by_doc.get("sample-otitis-media-adults-2011")
    assert res["hits"][0]["doc_id"] == "sample-otitis-media-adults"
    if old is not None:  # the decay may push it out of the top k altogether
        assert old["decay"] < 0.3 < new["decay"] and old["score"] < new["score"]
    out = Console(record=True, width=140)
    steps.print_search(out, steps.DEFAULT_QUESTION, res)
    assert "× decay" in out.export_text()


def test_demo_consultation_end_to_end(api, tokens, settings, sample_kb, tmp_path):
    wav = steps.speak(steps.DEFAULT_QUESTION, settings.data_dir)
    assert sf.info(io.BytesIO(wav)).duration > 1.0
    out = Console(record=True, width=160)
    run = steps.run_consultation(api, tokens["ann"], wav, out_dir=tmp_path / "demo", console=out, timeout_s=600)

    types = [t for _, t, _ in run.events]
    wanted = ["transcribed", "retrieved", "sentence", "audio_ready", "done"]
    assert all(t in types for t in wanted), types
    assert [types.index(t) for t in wanted] == sorted(types.index(t) for t in wanted), types
    assert types[-1] == "done"
    assert run.first_sentence_s is not None and run.first_audio_s is not None
    assert run.first_sentence_s <= run.first_audio_s <= run.done_s

    turn = run.turn
    assert turn["status"] == "done" and turn["answer"]
    assert "adult" in turn["transcript"].lower()
    assert turn["citations"] and turn["citations"][0]["document_id"] == "sample-otitis-media-adults"
    assert all(turn["timings"].get(stage, {}).get("total_s") is not None for stage in ("asr", "rag", "llm", "tts"))
    assert run.reply_path is not None and run.reply_path.parent == tmp_path / "demo"
    assert sf.info(str(run.reply_path)).duration > 0.5

    dates = steps.document_dates(api, tokens["root"])
    steps.print_consultation(out, run, dates)
    text = out.export_text()
    for needle in (
        "transcribed",
        "retrieved",
        "sentence 1",
        "audio_ready",
        "done",
        "transcript (en)",
        "answer",
        "citations",
        "Acute otitis media in adults",
        "2025-02-03",
        "timings",
        "upload → first sentence",
        "upload → first audio",
        f"reply-{run.turn_id}.wav",
    ):
        assert needle in text, (needle, text)


def test_demo_errors_are_clear(api, tokens, tmp_path):
    r = api.post("/v1/consultations", json={"title": "x"}, headers=tokens["ann"])
    with pytest.raises(steps.DemoError, match="upload the question: HTTP 4"):
        steps.run_consultation(api, tokens["ann"], b"RIFF not really a wav", out_dir=tmp_path)
    assert r.status_code == 201
    with pytest.raises(steps.DemoError, match="HTTP 403"):
        steps.ingest_sample_kb(api, tokens["ann"])  # a clinician may not upload documents
