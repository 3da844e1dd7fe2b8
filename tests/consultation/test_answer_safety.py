"""Answer safety end to end: typed questions against the sample knowledge base, through a real worker (rag and
llm pools, the real Qwen GGUF, seeded). What the knowledge base does not cover is refused by name; a weight is
answered from its own table row; a weight with no row borrows none; a clinician's everyday words are answered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.consultation.shared import worker_env
from tests.consultation.test_turns_pipeline import new_consultation, sse_events

pytestmark = pytest.mark.slow

SAMPLE_KB = Path(__file__).resolve().parents[2] / "knowledge" / "sample_kb"


@pytest.fixture(scope="module")
def safety_worker(start_module_worker, settings):
    return start_module_worker("all", timeout_s=240, **worker_env(settings), MEDVOICE_CONSULT_STREAM_TTS="false")


@pytest.fixture(scope="module")
def sample_kb(safety_worker, settings) -> dict:
    from workers.celery_app import celery_app

    summary = celery_app.send_task("rag.ingest", args=[[str(SAMPLE_KB)]], kwargs={"source": "sample"}).get(timeout=300)
    assert summary["added"] == 6 and summary["failed"] == 0, summary
    wait_for(lambda: (Path(settings.kb_dir) / "vocabulary.json").exists(), 60, "the KB vocabulary")
    return summary


def ask(api, headers, text: str, language: str | None = None) -> dict:
    cid = new_consultation(api, headers, "safety")
    body = {"text": text, **({"language": language} if language else {})}
    r = api.post(f"/v1/consultations/{cid}/turns", json=body, headers=headers)
    assert r.status_code == 202, r.text
    events = sse_events(api, r.json()["turn_id"], headers)
    assert events[-1][0] == "done", events[-3:]
    turn = api.get(f"/v1/turns/{r.json()['turn_id']}", headers=headers).json()
    turn["events"] = events
    return turn


def cited(turn: dict) -> list[dict]:
    return [c for c in turn["citations"] if c["cited"]]


def test_an_uncovered_drug_is_refused_by_name(api, tokens, sample_kb):
    turn = ask(api, tokens["ann"], "What is the starting dose of metformin for type 2 diabetes?")
    assert turn["answer"] == "The knowledge base has nothing on metformin."
    assert turn["citations"] == [] and turn["verdicts"]["mode"] == "no_answer"
    assert turn["verdicts"]["answerability"]["answerable"] is False
    retrieved = next(d for t, d in turn["events"] if t == "retrieved")
    assert retrieved["answerable"] is False and retrieved["count"] == 0


def test_an_uncovered_topic_in_chinese_is_refused_in_chinese(api, tokens, sample_kb):
    turn = ask(api, tokens["ann"], "糖尿病患者二甲双胍的起始剂量是多少？", "zh")
    assert turn["answer"] == "知识库中没有关于二甲双胍的内容。" and turn["citations"] == []


def test_a_weight_is_answered_from_its_own_row(api, tokens, sample_kb):
    turn = ask(api, tokens["ann"], "How much paracetamol should I give a 20 kg child?")
    answer = turn["answer"]
    assert "300 mg" in answer and "12.5 mL" in answer, answer
    for other_row in ("75 mg", "150 mg", "225 mg", "3 mL", "6 mL", "9.4 mL"):
        assert not re.search(rf"(?<![\d.]){re.escape(other_row)}", answer), answer
    assert turn["verdicts"]["mode"] == "extractive"
    assert [c["title"] for c in cited(turn)] == ["Fever in children, paracetamol dosing by weight"]


def test_a_weight_with_no_row_borrows_no_dose(api, tokens, sample_kb):
    turn = ask(api, tokens["ann"], "What dose of paracetamol for a child who weighs 35 kg?")
    answer = turn["answer"]
    assert "no entry for exactly 35 kg" in answer and "15 mg per kg" in answer, answer
    for row in ("75 mg", "150 mg", "225 mg", "300 mg", "525 mg", "12.5 mL"):
        assert row not in answer, answer


def test_everyday_words_are_answered_from_the_current_edition(api, tokens, sample_kb):
    turn = ask(api, tokens["ann"], "My patient has an ear infection. Which antibiotic, and for how long?")
    answer = turn["answer"]
    assert "amoxicillin" in answer and "5 days" in answer and "10 days" not in answer, answer
    assert all("superseded" not in c["title"] for c in cited(turn)) and cited(turn)


def test_the_age_band_decides_the_target(api, tokens, sample_kb):
    turn = ask(api, tokens["ann"], "What blood pressure target for a patient who is 85 years old?")
    assert "150/90" in turn["answer"] and "140/90" not in turn["answer"], turn["answer"]


def test_a_chinese_qualifier_gets_its_dose(api, tokens, sample_kb):
    turn = ask(api, tokens["ann"], "肾功能不全的成人奥司他韦剂量是多少？", "zh")
    assert "30 mg" in turn["answer"] and "75 mg" not in turn["answer"], turn["answer"]
    assert cited(turn) and turn["answer"].endswith("。")


def test_a_generated_answer_is_checked_sentence_by_sentence(api, tokens, sample_kb):
    # Not a dose question, and no one line says all of it: the LLM phrases it, and every sentence it kept is
    # supported by a passage line.
    turn = ask(api, tokens["ann"], "What is acute otitis media and how is the pain relieved?")
    verdicts = turn["verdicts"]
    assert verdicts["mode"] in ("generated", "unverified"), verdicts
    assert verdicts["claims"] and all(c["action"] in ("kept", "replaced", "dropped") for c in verdicts["claims"])
    assert turn["answer"] and "**" not in turn["answer"] and not turn["answer"].lower().startswith("based on")
    assert len([s for s in re.split(r"(?<=[.!?])\s+", turn["answer"]) if s]) <= 3
    assert turn["timings"]["llm"]["sentences_generated"] == len(verdicts["claims"])


def test_a_chinese_question_is_answered_from_the_english_page(api, tokens, sample_kb):
    turn = ask(api, tokens["ann"], "成人急性中耳炎首选什么抗生素？用几天？", "zh")
    assert "amoxicillin" in turn["answer"] and "5 days" in turn["answer"], turn["answer"]
    assert [c["title"] for c in cited(turn)] == ["Acute otitis media in adults"]
