"""The deployment's shape: one worker per pool (asr, rag, llm, tts). A turn's chain crosses all four queues,
each stage runs where its engine lives, and they meet only through SQL, Redis and the shared data dir."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import redis
import soundfile as sf

from tests.consultation.shared import KB_DOC, worker_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pools(start_module_worker, settings):
    env = worker_env(settings)
    return {pool: start_module_worker(pool, timeout_s=240, **env) for pool in ("rag", "asr", "llm", "tts")}


def test_a_spoken_turn_crosses_the_four_pools(api, tokens, settings, pools):
    from workers.celery_app import celery_app

    src = Path(settings.data_dir) / "kb-src" / "otitis.md"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(KB_DOC, encoding="utf-8")
    ingested = celery_app.send_task("rag.ingest", args=[[str(src)]], kwargs={"source": "formulary"}).get(timeout=180)
    assert ingested["added"] == 1
    question = "How should an adult with a middle ear infection be treated?"
    spoken = celery_app.send_task("tts.synthesize", kwargs={"text": question, "speed": 1.0}).get(timeout=120)
    wav = (Path(settings.data_dir) / spoken["audio_ref"]).read_bytes()

    h = tokens["ann"]
    cid = api.post("/v1/consultations", json={"title": "pools"}, headers=h).json()["id"]
    r = api.post(
        f"/v1/consultations/{cid}/turns",
        files={"file": ("q.wav", wav, "audio/wav")},
        data={"language": "en"},
        headers=h,
    )
    assert r.status_code == 202, r.text
    tid = r.json()["turn_id"]
    stream = api.get(f"/v1/turns/{tid}/events", headers=h).text
    assert stream.rstrip().splitlines()[-2] == "event: done", stream[-500:]
    types = re.findall(r"^event: (\S+)$", stream, flags=re.M)

    turn = api.get(f"/v1/turns/{tid}", headers=h).json()
    assert turn["status"] == "done" and "infection" in turn["transcript"].lower()
    assert turn["citations"] and turn["answer"]
    audio, rate = sf.read(io.BytesIO(api.get(f"/v1/turns/{tid}/audio", headers=h).content))
    assert len(audio) / rate > 0.5

    # The answer was spoken sentence by sentence on the tts pool as the llm pool gave it: tts.turn only joined
    # the clips. (With one sentence its clip can only follow it: no order is asserted then.)
    assert turn["timings"]["tts"]["streamed_clips"] == turn["timings"]["tts"]["clips"] >= 1, turn["timings"]
    assert "tts.synthesize task=" in pools["tts"].log() and f"turn={tid} index=0" in pools["tts"].log()
    # A quoted answer has all its sentences at once, so only a generated one can be heard while it is made.
    if types.count("sentence") >= 2 and turn["verdicts"]["mode"] == "generated":
        assert types.index("audio") < types.index("answered"), types

    # each stage ran in its own pool's worker, and only there
    for pool, stage in (("asr", "asr.turn"), ("rag", "rag.turn"), ("llm", "llm.turn"), ("tts", "tts.turn")):
        log = pools[pool].log()
        assert f"Task {stage}[" in log and f"turn={tid}" in log, pool
        others = [p for p in pools if p != pool]
        assert all(f"Task {stage}[" not in pools[o].log() for o in others), stage


def _typed(api, h: dict, text: str) -> dict:
    cid = api.post("/v1/consultations", json={"title": "prefill"}, headers=h).json()["id"]
    r = api.post(f"/v1/consultations/{cid}/turns", json={"text": text, "language": "en"}, headers=h)
    assert r.status_code == 202, r.text
    tid = r.json()["turn_id"]
    stream = api.get(f"/v1/turns/{tid}/events", headers=h).text
    assert "event: done" in stream, stream[-500:]
    return api.get(f"/v1/turns/{tid}", headers=h).json()


def test_a_prefilled_prompt_is_used_only_when_it_is_exactly_the_final_one(api, tokens, settings, pools):
    """The live path's speculative prefill, through the real rag and llm pools: a prefill made from the start of
    the question (same passages) is used, one made from other passages is not, and the answer is the same in
    all three cases: it is always computed for the final question (the LLM is seeded)."""
    from workers.celery_app import celery_app

    src = Path(settings.data_dir) / "kb-src" / "otitis.md"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(KB_DOC, encoding="utf-8")
    celery_app.send_task("rag.ingest", args=[[str(src)]], kwargs={"source": "formulary"}).get(timeout=180)
    question = "Explain how to manage ear pain in an adult with otitis media."
    h = tokens["ann"]

    def prefill(text: str, passages: list[dict], consultation_id: str | None = None) -> dict:
        return celery_app.send_task(
            "llm.prefill",
            kwargs={"question": text, "passages": passages, "language": "en", "consultation_id": consultation_id},
        ).get(timeout=120)

    heard = "Explain how to manage ear pain in an adult with otitis"  # what was said before the end
    found = celery_app.send_task("rag.prefill", kwargs={"question": heard}).get(timeout=60)
    assert found["llm"] and found["passages"], found  # not a quote: the LLM will write this answer
    other = [{**found["passages"][0], "text": "Community-acquired pneumonia is treated with amoxicillin 500 mg."}]

    prefill(question, other)  # the cache holds another prompt
    base = _typed(api, h, question)
    assert base["timings"]["llm"]["prefill"] == "none", base["timings"]["llm"]

    prefill(question, other)  # ...and again, after the answer just given
    filled = prefill(heard, found["passages"])
    assert filled["evaluated"] > 0 and not filled["stopped"], filled
    warm = _typed(api, h, question)
    llm = warm["timings"]["llm"]
    assert llm["prefill"] == "held" and llm["cached_tokens"] > 40, llm
    assert warm["answer"] == base["answer"]

    # Retrieval on the partial found other passages (and the exact prefill above is no longer in Redis).
    store = redis.Redis.from_url(settings.redis_url)
    for key in store.scan_iter("medvoice:prefill:*"):
        store.delete(key)
    prefill(heard, other)
    cold = _typed(api, h, question)
    assert cold["timings"]["llm"]["prefill"] == "none" and cold["answer"] == base["answer"]

    # A prefill of bad input is refused with a typed error; the pool goes on.
    with pytest.raises(Exception, match="passages"):
        prefill(question, [])
    assert celery_app.send_task("llm.ping").get(timeout=30)["pid"]
