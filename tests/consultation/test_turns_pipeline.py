"""REST consultation end to end over a real worker (asr, rag, llm, tts pools in one process, real small models):
upload → transcript → cited answer → reply audio, the SSE order, isolation and audit, a failing stage,
and every kind of bad input refused with a 4xx while the records already there stay intact."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import time

import pytest
import soundfile as sf

from tests.consultation.audio_fixtures import bad_uploads, silence, tone
from tests.consultation.shared import worker_env
from workers.core.db import session_scope
from workers.core.records import AuditEvent, Citation, Turn, TurnStatus
from workers.grounding import NO_ANSWER, UNVERIFIED

pytestmark = pytest.mark.slow

STAGE_ORDER = ["transcribed", "retrieved", "sentence", "answered", "audio", "audio_ready", "done"]


@pytest.fixture(scope="module")
def pipeline_worker(start_module_worker, settings):
    """This module exercises the generated answer (history, the claim check on the real model's own numbers);
    the quoted answers of the default mode are tested end to end in test_answer_safety.py."""
    return start_module_worker("all", timeout_s=240, **worker_env(settings), MEDVOICE_CONSULT_ANSWER_MODE="generative")


def sse_events(api, turn_id: str, headers: dict, with_ids: bool = False) -> list[tuple]:
    r = api.get(f"/v1/turns/{turn_id}/events", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    out = []
    for block in r.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            ev = (fields["event"], json.loads(fields["data"]))
            out.append((*ev, fields.get("id")) if with_ids else ev)
    return out


def new_consultation(api, headers, title="ear pain") -> str:
    r = api.post("/v1/consultations", json={"title": title}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def consultation(api, cid, headers) -> dict:
    r = api.get(f"/v1/consultations/{cid}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def spoken_turn(api, tokens, knowledge, speech):
    """One audio turn run to the end; its SSE events are read while it runs."""
    cid = new_consultation(api, tokens["ann"])
    # Plain words Whisper base hears reliably from Piper (its voice varies run to run; drug names get garbled).
    wav = speech("How should an adult with a middle ear infection be treated?")
    r = api.post(
        f"/v1/consultations/{cid}/turns",
        files={"file": ("question.wav", wav, "audio/wav")},
        data={"language": "en"},
        headers=tokens["ann"],
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["index"] == 1
    evs = sse_events(api, body["turn_id"], tokens["ann"])
    return {"cid": cid, "turn_id": body["turn_id"], "events": evs}


def test_audio_turn_gives_transcript_cited_answer_and_reply_audio(api, tokens, spoken_turn, settings, monkeypatch):
    c = consultation(api, spoken_turn["cid"], tokens["ann"])
    assert c["turn_count"] == 1
    (turn,) = c["turns"]
    assert turn["status"] == "done", turn["error"]
    assert turn["input_kind"] == "audio" and turn["language"] == "en"
    # The tests' voice has no sampling noise, so what Whisper base hears of it is the same every run.
    assert all(w in turn["transcript"].lower() for w in ("adult", "ear", "infection")), turn["transcript"]
    assert turn["answer"] and turn["answer"] != NO_ANSWER["en"]
    assert turn["citations"], "the retrieved passage is recorded as a citation"
    answered = next(d for t, d in spoken_turn["events"] if t == "answered")
    assert (
        turn["disclaimer"].startswith("Drawn from your clinic's knowledge base")
        and answered["disclaimer"] == turn["disclaimer"]
    )
    # The record keeps the disclaimer the answer was given with, whatever the setting says later.
    monkeypatch.setattr(settings, "consult_disclaimer_en", "A later wording.")
    assert api.get(f"/v1/turns/{turn['id']}", headers=tokens["ann"]).json()["disclaimer"] == turn["disclaimer"]
    first = turn["citations"][0]
    assert first["n"] == 1 and first["title"] == "Otitis media in adults" and first["source"] == "formulary"
    assert 0 < first["score"] <= 1
    # the answer cites by [n] (the model's own marker, or one attributed by word overlap), and every
    # marker names a recorded citation
    markers = {int(m) for m in re.findall(r"\[(\d+)\]", turn["answer"])}
    assert markers and markers <= {x["n"] for x in turn["citations"]}, turn["answer"]
    assert {x["n"] for x in turn["citations"] if x["cited"]} == markers
    for stage in ("input", "asr", "rag", "llm", "tts"):
        assert stage in turn["timings"], turn["timings"]
    assert turn["timings"]["asr"]["audio_s"] > 1
    assert turn["has_reply_audio"] is True

    r = api.get(f"/v1/turns/{spoken_turn['turn_id']}/audio", headers=tokens["ann"])
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    audio, rate = sf.read(io.BytesIO(r.content))
    assert rate > 8000 and len(audio) / rate > 0.5


def test_the_knowledge_base_vocabulary_reaches_the_ear(api, tokens, spoken_turn, settings):
    from knowledge import vocabulary

    terms = vocabulary.read(settings.kb_dir)
    assert terms[0] == "Otitis media in adults" and {"amoxicillin", "azithromycin", "paracetamol"} <= set(terms)
    turn = api.get(f"/v1/turns/{spoken_turn['turn_id']}", headers=tokens["ann"]).json()
    assert turn["timings"]["asr"]["hotwords"] == len(terms)  # all of them: a short page fits the bound


def test_no_clinical_text_in_the_worker_log(api, tokens, spoken_turn, pipeline_worker):
    turn = api.get(f"/v1/turns/{spoken_turn['turn_id']}", headers=tokens["ann"]).json()
    log = pipeline_worker.log()
    assert spoken_turn["turn_id"] in log  # ids are logged ...
    texts = [turn["transcript"]] + [d["text"] for t, d in spoken_turn["events"] if t == "sentence"]
    leaked = [t for t in texts if t and t in log]
    assert not leaked, leaked  # ... words are not


def test_sse_events_come_in_stage_order(spoken_turn):
    types = [t for t, _ in spoken_turn["events"]]
    assert types[-1] == "done", types
    firsts = [types.index(t) for t in STAGE_ORDER]
    assert firsts == sorted(firsts), types
    statuses = [d["status"] for t, d in spoken_turn["events"] if t == "status"]
    assert statuses == ["transcribing", "retrieving", "generating", "speaking"]
    assert types[types.index("status", types.index("retrieved")) :][:2] == ["status", "sentence"]
    sentences = [d for t, d in spoken_turn["events"] if t == "sentence"]
    assert [s["index"] for s in sentences] == list(range(len(sentences)))
    retrieved = next(d for t, d in spoken_turn["events"] if t == "retrieved")
    assert retrieved["count"] >= 1 and retrieved["citations"][0]["n"] == 1
    # Replaying a finished turn gives the same events again, ending at done.
    assert types.count("done") == 1


def test_sse_resumes_after_last_event_id(api, tokens, spoken_turn):
    tid = spoken_turn["turn_id"]
    full = sse_events(api, tid, tokens["ann"], with_ids=True)
    assert [(t, d) for t, d, _ in full] == spoken_turn["events"]  # a finished turn replays the same events
    cut = next(i for i, (t, _, _) in enumerate(full) if t == "answered")
    rest = sse_events(api, tid, {**tokens["ann"], "Last-Event-ID": full[cut][2]})
    assert rest == [(t, d) for t, d, _ in full[cut + 1 :]] and rest[-1][0] == "done"


def test_sse_for_a_finished_turn_whose_stream_expired_comes_from_the_record(api, tokens, spoken_turn):
    from workers.core import events

    cid = new_consultation(api, tokens["ann"], "expired stream")
    tid = api.post(
        f"/v1/consultations/{cid}/turns",
        json={"text": "Which orbital resonance shapes Saturn's rings?"},
        headers=tokens["ann"],
    ).json()["turn_id"]
    assert sse_events(api, tid, tokens["ann"])[-1][0] == "done"
    events.clear(tid)  # what the stream's TTL does an hour later
    assert sse_events(api, tid, tokens["ann"]) == [("done", {"status": "done", "from": "record"})]


def test_concurrent_submissions_get_distinct_indexes(api, tokens, knowledge):
    from concurrent.futures import ThreadPoolExecutor

    cid = new_consultation(api, tokens["ann"], "concurrent")

    def post(i: int):
        return api.post(
            f"/v1/consultations/{cid}/turns",
            json={"text": f"Unrelated question number {i} on comets?"},
            headers=tokens["ann"],
        )

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(post, range(4)))
    assert [r.status_code for r in responses] == [202] * 4, [r.text for r in responses]
    assert sorted(r.json()["index"] for r in responses) == [1, 2, 3, 4]
    for r in responses:
        assert sse_events(api, r.json()["turn_id"], tokens["ann"])[-1][0] == "done"
    turns = consultation(api, cid, tokens["ann"])["turns"]
    assert [t["index"] for t in turns] == [1, 2, 3, 4] and {t["status"] for t in turns} == {"done"}


def test_text_turn_without_relevant_knowledge_says_so(api, tokens, spoken_turn):
    cid = spoken_turn["cid"]
    r = api.post(
        f"/v1/consultations/{cid}/turns",
        json={"text": "Which orbital resonance shapes Saturn's rings?"},
        headers=tokens["ann"],
    )
    assert r.status_code == 202, r.text
    assert r.json()["index"] == 2
    evs = sse_events(api, r.json()["turn_id"], tokens["ann"])
    types = [t for t, _ in evs]
    assert types[:2] == ["status", "retrieved"] and types[-1] == "done" and "transcribed" not in types
    turn = consultation(api, cid, tokens["ann"])["turns"][1]
    assert turn["status"] == "done" and turn["question"].startswith("Which orbital")
    # the no-answer reply names what the knowledge base lacks, in the question's words, and cites nothing
    assert turn["answer"] == "The knowledge base has nothing on orbital resonance or Saturn's."
    assert turn["citations"] == [] and turn["verdicts"]["mode"] == "no_answer"
    assert turn["verdicts"]["answerability"]["answerable"] is False
    assert turn["has_reply_audio"]


def test_a_named_language_sets_the_answer_language(api, tokens, knowledge):
    cid = new_consultation(api, tokens["ann"], "中文")
    r = api.post(
        f"/v1/consultations/{cid}/turns",
        json={"text": "土星环的轨道共振是什么？", "language": "zh"},
        headers=tokens["ann"],
    )
    assert r.status_code == 202 and r.headers["location"] == f"/v1/turns/{r.json()['turn_id']}"
    assert sse_events(api, r.json()["turn_id"], tokens["ann"])[-1][0] == "done"
    turn = api.get(r.headers["location"], headers=tokens["ann"]).json()
    assert turn["language"] == "zh" and turn["answer"].startswith("知识库中没有关于") and "土星" in turn["answer"]


def test_follow_up_turn_sees_earlier_turns(api, tokens, spoken_turn):
    cid = spoken_turn["cid"]  # turn 3: after the spoken turn and the text turn above (file order)
    r = api.post(
        f"/v1/consultations/{cid}/turns",
        json={"text": "What if the adult is allergic to penicillin?"},
        headers=tokens["ann"],
    )
    assert r.status_code == 202, r.text
    evs = sse_events(api, r.json()["turn_id"], tokens["ann"])
    assert evs[-1][0] == "done", evs[-1]
    turn = api.get(f"/v1/turns/{r.json()['turn_id']}", headers=tokens["ann"]).json()
    assert turn["index"] == 3 and turn["citations"]
    # turn 1 within the token budget; turn 2's canned no-answer reply is left out (a 0.5B model repeats it)
    assert turn["timings"]["llm"]["history_turns"] == 1
    assert turn["answer"] and turn["answer"] != NO_ANSWER["en"], (turn["answer"], turn["timings"]["llm"])


def test_chinese_speech_with_the_language_named(api, tokens, knowledge):
    """A real Mandarin recording (eval-data), `language=zh`: Chinese transcript, the Chinese no-answer reply."""
    from tests.conftest import eval_data

    wav = eval_data("speech", "funasr_example_0.wav").read_bytes()
    cid = new_consultation(api, tokens["ann"], "普通话")
    r = api.post(
        f"/v1/consultations/{cid}/turns",
        files={"file": ("zh.wav", wav, "audio/wav")},
        data={"language": "zh"},
        headers=tokens["ann"],
    )
    assert r.status_code == 202, r.text
    assert sse_events(api, r.json()["turn_id"], tokens["ann"])[-1][0] == "done"
    turn = api.get(f"/v1/turns/{r.json()['turn_id']}", headers=tokens["ann"]).json()
    assert turn["language"] == "zh" and turn["transcript"].startswith("欢迎大家")
    # the knowledge base holds one English page on otitis media: the Chinese no-answer reply names the topic
    assert turn["answer"].startswith("知识库中没有关于") and turn["citations"] == []
    assert "诊所知识库" in turn["disclaimer"]  # the medical disclaimer, in the answer's language


def test_a_failing_stage_marks_the_turn_error(api, tokens, knowledge):
    cid = new_consultation(api, tokens["ann"], "silence")
    r = api.post(
        f"/v1/consultations/{cid}/turns",
        files={"file": ("quiet.wav", silence(1.5), "audio/wav")},
        headers=tokens["ann"],
    )
    assert r.status_code == 202, r.text  # it decodes: only the ASR stage can tell there is no speech
    tid = r.json()["turn_id"]
    evs = sse_events(api, tid, tokens["ann"])
    assert evs[-1][0] == "error" and evs[-1][1]["stage"] == "asr" and evs[-1][1]["code"] == "empty_input"
    turn = api.get(f"/v1/turns/{tid}", headers=tokens["ann"]).json()
    assert turn["status"] == "error" and turn["error"].startswith("asr: empty_input")
    assert turn["answer"] is None and not turn["has_reply_audio"]
    assert api.get(f"/v1/turns/{tid}/audio", headers=tokens["ann"]).status_code == 404
    # the record of the failure replays as the terminal event
    assert sse_events(api, tid, tokens["ann"])[-1][0] == "error"


def snapshot(settings) -> tuple:
    with session_scope(settings.resolved_database_url) as db:
        turns = sorted((t.id, t.status.value, t.answer) for t in db.query(Turn))
        cits = db.query(Citation).count()
    files = sorted(p.name for p in (settings.audio_dir / "in").rglob("*") if p.is_file())
    return turns, cits, files


def test_bad_input_gets_a_4xx_and_nothing_recorded_is_lost(api, tokens, settings, spoken_turn):
    cid = spoken_turn["cid"]
    before = snapshot(settings)
    url = f"/v1/consultations/{cid}/turns"
    h = tokens["ann"]
    for case, (name, data, status, code) in bad_uploads(settings.consult_max_audio_s).items():
        r = api.post(url, files={"file": (name, data, "audio/wav")}, headers=h)
        assert r.status_code == status, (case, r.text)
        assert r.json()["detail"]["code"] == code, case
    too_big = tone(1.0) + b"\0" * settings.consult_max_audio_bytes
    assert api.post(url, files={"file": ("big.wav", too_big, "audio/wav")}, headers=h).status_code == 413

    def chunked():  # no Content-Length: the limit is counted while the body streams in
        yield b'--xx\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        for _ in range(settings.consult_max_audio_bytes // 65536 + 4):
            yield b"\0" * 65536
        yield b"\r\n--xx--\r\n"

    r = api.post(url, content=chunked(), headers={**h, "Content-Type": "multipart/form-data; boundary=xx"})
    assert r.status_code == 413 and r.json()["detail"]["code"] == "input_too_large", r.text
    assert r.json()["detail"]["message"].startswith("upload larger")  # stopped while streaming, not after
    assert api.post(url, files={"other": ("q.wav", tone(1.0), "audio/wav")}, headers=h).status_code == 400
    json_h = {**h, "Content-Type": "application/json"}
    assert api.post(url, content=b'{"text": "unclosed', headers=json_h).status_code == 400
    assert api.post(url, content=b'\xff\xfe{"text": 1}', headers=json_h).status_code == 400
    assert api.post(url, json={"text": "   "}, headers=h).status_code == 422
    assert api.post(url, json={"text": 42}, headers=h).status_code == 400
    assert api.post(url, json={"question": "x"}, headers=h).status_code == 400
    assert api.post(url, json={"text": "hi", "language": "en-US!"}, headers=h).status_code == 400
    assert (
        api.post(
            url, files={"file": ("q.wav", tone(1.0), "audio/wav")}, data={"language": "english please"}, headers=h
        ).status_code
        == 400
    )
    assert api.post(url, json={"text": "x" * (settings.consult_max_text_chars + 1)}, headers=h).status_code == 413
    assert api.post(url, content=b"plain words", headers={**h, "Content-Type": "text/plain"}).status_code == 415
    # unknown ids
    assert api.post("/v1/consultations/nope/turns", json={"text": "hi"}, headers=h).status_code == 404
    for path in ("/v1/turns/nope", "/v1/turns/nope/audio", "/v1/turns/nope/events"):
        assert api.get(path, headers=h).status_code == 404
    assert api.get(f"/v1/turns/{spoken_turn['turn_id']}/events?after=bogus", headers=h).status_code == 422
    assert snapshot(settings) == before
    # the service still works for the same consultation
    assert api.get(f"/v1/turns/{spoken_turn['turn_id']}", headers=h).json()["status"] == "done"


def test_isolation_admin_reads_and_everything_is_audited(api, tokens, settings, spoken_turn):
    cid, tid = spoken_turn["cid"], spoken_turn["turn_id"]
    ben, root = tokens["ben"], tokens["root"]
    for path in (f"/v1/consultations/{cid}", f"/v1/turns/{tid}", f"/v1/turns/{tid}/audio", f"/v1/turns/{tid}/events"):
        assert api.get(path, headers=ben).status_code == 404, path
    assert api.post(f"/v1/consultations/{cid}/turns", json={"text": "hi"}, headers=ben).status_code == 404
    assert api.get(f"/v1/consultations/{cid}", headers=root).json()["turns"][0]["id"] == tid
    assert api.get(f"/v1/turns/{tid}/audio", headers=root).status_code == 200
    assert api.post(f"/v1/consultations/{cid}/turns", json={"text": "hi"}, headers=root).status_code == 403
    with session_scope(settings.resolved_database_url) as db:
        rows = [(e.action, e.actor_role) for e in db.query(AuditEvent).filter_by(record_id=tid)]
    assert ("turn.create", "clinician") in rows
    assert ("turn.events", "clinician") in rows and ("turn.audio", "clinician") in rows
    assert ("turn.audio", "admin") in rows
    assert not any(role is None for _, role in rows)


def stage(name: str, state: dict, timeout: float = 240) -> dict:
    from workers.celery_app import celery_app

    return celery_app.send_task(name, args=[state]).get(timeout=timeout)


def recorded_text_turn(settings, cid: str, question: str) -> str:
    """A turn row as the API records it, left for the test to drive stage by stage."""
    with session_scope(settings.resolved_database_url) as db:
        n = db.query(Turn).filter_by(consultation_id=cid).count()
        t = Turn(consultation_id=cid, index=n + 1, input_kind="text", question_text=question)
        db.add(t)
        db.flush()
        return t.id


def citations_of(settings, tid: str) -> list[tuple]:
    with session_scope(settings.resolved_database_url) as db:
        return sorted((c.n, c.chunk_id) for c in db.query(Citation).filter_by(turn_id=tid))


def test_redelivered_stages_do_not_duplicate_records(api, tokens, settings, knowledge):
    cid = new_consultation(api, tokens["ann"], "redelivery")
    tid = recorded_text_turn(settings, cid, "How many days of amoxicillin for otitis media in adults?")
    first = stage("rag.turn", {"turn_id": tid})
    again = stage("rag.turn", {"turn_id": tid})  # a re-delivered stage runs a second time
    assert first["passages"] and again["passages"] == first["passages"]
    assert citations_of(settings, tid) == sorted((p["n"], p["chunk_id"]) for p in first["passages"])
    stage("llm.turn", first)
    answer = stage("llm.turn", first)
    stage("tts.turn", answer)
    reply = stage("tts.turn", answer)  # the turn is done: a late stage leaves it alone
    assert reply == {"turn_id": tid, "skipped": True}
    assert stage("rag.turn", {"turn_id": tid}) == {"turn_id": tid, "skipped": True}
    turn = api.get(f"/v1/turns/{tid}", headers=tokens["ann"]).json()
    assert turn["status"] == "done" and turn["answer"] == " ".join(answer["sentences"])
    assert [c["n"] for c in turn["citations"]] == [p["n"] for p in first["passages"]]
    assert api.get(f"/v1/turns/{tid}/audio", headers=tokens["ann"]).status_code == 200
    types = [t for t, _ in sse_events(api, tid, tokens["ann"])]
    assert [d["stage"] for t, d in sse_events(api, tid, tokens["ann"]) if t == "restart"] == ["rag", "llm"]
    assert types.index("restart") == types.index("retrieved") + 1 and types[-1] == "done"


def test_a_transient_database_outage_is_retried(api, tokens, settings, knowledge, pipeline_worker):
    cid = new_consultation(api, tokens["ann"], "outage")
    tid = recorded_text_turn(settings, cid, "What relieves ear pain in otitis media?")
    db_path = settings.resolved_database_url.removeprefix("sqlite:///")
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # every writer waits; the worker's busy timeout (30 s) runs out
    try:
        from workers.celery_app import celery_app

        pending = celery_app.send_task("rag.turn", args=[{"turn_id": tid}])
        time.sleep(33)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    out = pending.get(timeout=120)
    assert out["passages"], out
    assert "stage=rag transient OperationalError, retry 1/" in pipeline_worker.log()
    with session_scope(settings.resolved_database_url) as db:
        turn = db.get(Turn, tid)
        assert turn.status == TurnStatus.retrieving and turn.error is None and "rag" in turn.timings
    assert citations_of(settings, tid) == sorted((p["n"], p["chunk_id"]) for p in out["passages"])


def test_a_cancelled_turn_stops_and_says_so(api, tokens, settings, knowledge):
    cid = new_consultation(api, tokens["ann"], "cancel")
    tid = recorded_text_turn(settings, cid, "What relieves ear pain in otitis media?")
    assert api.post(f"/v1/turns/{tid}/cancel", headers=tokens["ben"]).status_code == 404
    assert api.post(f"/v1/turns/{tid}/cancel", headers=tokens["root"]).status_code == 403
    r = api.post(f"/v1/turns/{tid}/cancel", headers=tokens["ann"])
    assert r.status_code == 202 and r.json()["status"] == "cancelling"
    with pytest.raises(Exception) as info:
        stage("rag.turn", {"turn_id": tid})  # the next stage finds the flag and stops
    assert type(info.value).__name__ == "TurnCancelled"
    evs = sse_events(api, tid, tokens["ann"])
    assert evs[-1][0] == "cancelled" and evs[-1][1]["code"] == "turn_cancelled"
    turn = api.get(f"/v1/turns/{tid}", headers=tokens["ann"]).json()
    assert turn["status"] == "error" and turn["error"].startswith("rag: turn_cancelled")
    assert citations_of(settings, tid) == []
    assert api.post(f"/v1/turns/{tid}/cancel", headers=tokens["ann"]).status_code == 409


def test_numbers_in_a_real_answer_are_all_in_the_passages(api, tokens, settings, knowledge):
    """The guard on the real model: the passage names no dose, the question asks for one in mg."""
    from workers.grounding import quantities

    cid = new_consultation(api, tokens["ann"], "guard")
    tid = recorded_text_turn(settings, cid, "What is the exact amoxicillin dose in mg for an adult with otitis media?")
    passage = {
        "n": 1,
        "chunk_id": "c1",
        "doc_id": "d1",
        "title": "Otitis media",
        "source": "test",
        "score": 0.9,
        "text": "Amoxicillin is the usual first choice for acute otitis media in adults. Review after 3 days.",
    }
    out = stage("llm.turn", {"turn_id": tid, "language": "en", "passages": [passage]})
    turn = api.get(f"/v1/turns/{tid}", headers=tokens["ann"]).json()
    llm = turn["timings"]["llm"]
    assert turn["answer"] == " ".join(out["sentences"])
    assert quantities(turn["answer"]) <= quantities(passage["text"]), turn["answer"]
    assert turn["guard_fired"] == bool(llm["guard_replaced"] + llm["guard_dropped"])
    # The seeded model (Qwen2.5 0.5B, seed 1234) states a dose from memory here, which the guard drops; were
    # it to stop doing so, this test would no longer exercise the guard and says so.
    assert turn["guard_fired"], f"the model invented no number this time: {llm}"
    assert turn["answer"] == UNVERIFIED["en"]
