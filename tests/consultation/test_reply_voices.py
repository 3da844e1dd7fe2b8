"""A turn's reply is spoken by the voice of each sentence's language, through a real worker (all pools, the real
models, the sample knowledge base): a Chinese answer by the Mandarin voice (Whisper hears Chinese in the reply),
an English one by the English voice, every clip at one rate; without a Chinese voice the Chinese answer stays
text, and the stream says so. The tts pool's own contract: unknown voices and unvoiced languages are typed."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import wait_for
from tests.consultation.shared import worker_env
from tests.consultation.test_turns_pipeline import new_consultation, sse_events

pytestmark = pytest.mark.slow

SAMPLE_KB = Path(__file__).resolve().parents[2] / "knowledge" / "sample_kb"
ZH_QUESTION = "肾功能不全的成人奥司他韦剂量是多少？"
EN_QUESTION = "What is the first-line antibiotic for otitis media in adults, and for how long?"


@pytest.fixture(scope="module")
def worker(start_module_worker, settings):
    w = start_module_worker("all", timeout_s=240, **worker_env(settings))
    from workers.celery_app import celery_app

    summary = celery_app.send_task("rag.ingest", args=[[str(SAMPLE_KB)]], kwargs={"source": "sample"}).get(timeout=300)
    assert summary["failed"] == 0, summary
    wait_for(lambda: (Path(settings.kb_dir) / "vocabulary.json").exists(), 60, "the KB vocabulary")

    def searchable() -> bool:  # the lexical index is rebuilt in the background after the write
        found = celery_app.send_task("rag.search", args=["奥司他韦 剂量"], kwargs={"language": "zh"}).get(timeout=60)
        return any("流感" in (h.get("title") or "") for h in found.get("hits", []))

    wait_for(searchable, 60, "the Chinese page in the index", interval_s=1.0)
    return w


def ask(api, headers, text: str, language: str) -> dict:
    cid = new_consultation(api, headers, "voices")
    r = api.post(f"/v1/consultations/{cid}/turns", json={"text": text, "language": language}, headers=headers)
    assert r.status_code == 202, r.text
    events = sse_events(api, r.json()["turn_id"], headers)
    assert events[-1][0] == "done", events[-3:]
    turn = api.get(f"/v1/turns/{r.json()['turn_id']}", headers=headers).json()
    turn["events"] = events
    return turn


def transcribe(settings, api, headers, turn: dict, language: str) -> str:
    from workers.celery_app import celery_app

    r = api.get(f"/v1/turns/{turn['id']}/audio", headers=headers)
    assert r.status_code == 200, r.text
    path = Path(settings.data_dir) / "audio" / f"heard-{turn['id']}.wav"
    path.write_bytes(r.content)
    ref = str(path.relative_to(settings.data_dir))
    return celery_app.send_task("asr.transcribe", args=[ref], kwargs={"language": language}).get(timeout=300)["text"]


def test_a_chinese_turn_is_answered_in_chinese_speech(api, tokens, settings, worker):
    from workers.engines.voices.zh_frontend import chinese_number

    turn = ask(api, tokens["ann"], ZH_QUESTION, "zh")
    assert "30 mg" in turn["answer"] and "每日两次" in turn["answer"], turn["answer"]
    audio = [d for t, d in turn["events"] if t == "audio"]
    assert audio and all(d["sample_rate"] == 24000 for d in audio)
    assert "text_only" not in [t for t, _ in turn["events"]]
    assert f"turn={turn['id']} index=0 voice=baker" in worker.log()
    info = sf.info(io.BytesIO(api.get(f"/v1/turns/{turn['id']}/audio", headers=tokens["ann"]).content))
    assert info.samplerate == 24000 and info.duration > 2.0
    text = transcribe(settings, api, tokens["ann"], turn, "zh")
    text = re.sub(r"\d+", lambda m: chinese_number(m.group(0)), text)
    assert "每日两次" in text and "毫克" in text, text


def test_an_english_turn_still_gets_the_english_voice(api, tokens, settings, worker):
    turn = ask(api, tokens["ann"], EN_QUESTION, "en")
    assert "amoxicillin" in turn["answer"], turn["answer"]
    assert f"turn={turn['id']} index=0 voice=joe" in worker.log()
    assert all(d["sample_rate"] == 24000 for t, d in turn["events"] if t == "audio")
    text = transcribe(settings, api, tokens["ann"], turn, "en").lower()
    assert "amoxicillin" in text and "times daily" in text and "days" in text, text


def test_the_tts_pool_names_its_voices_and_types_what_it_cannot_say(worker):
    from workers.celery_app import celery_app
    from workers.core import errors

    voices = celery_app.send_task("tts.voices").get(timeout=60)
    assert [(v["id"], v["language"], v["sample_rate"], v["default"]) for v in voices] == [
        ("joe", "en", 24000, True),
        ("baker", "zh", 24000, True),
    ]
    out = celery_app.send_task("tts.synthesize", args=["阿莫西林 500 mg"]).get(timeout=120)
    assert (out["voice"], out["language"], out["backend"], out["sample_rate"]) == ("baker", "zh", "baker", 24000)
    out = celery_app.send_task("tts.synthesize", args=["Take it with food."], kwargs={"language": "en"}).get(
        timeout=120
    )
    assert (out["voice"], out["language"]) == ("joe", "en")
    with pytest.raises(errors.UnknownVoice) as unknown:
        celery_app.send_task("tts.synthesize", args=["Take it with food."], kwargs={"voice": "alloy"}).get(timeout=60)
    assert unknown.value.http_status == 400 and unknown.value.code == "unknown_voice"
    with pytest.raises(errors.NoVoiceForLanguage) as none:
        celery_app.send_task("tts.synthesize", args=["Что такое средний отит?"]).get(timeout=60)
    assert none.value.http_status == 422 and none.value.details["language"] == "ru"


def test_the_demo_asks_a_chinese_question_aloud(api, tokens, settings, worker, tmp_path):
    """`make demo`'s Chinese step: the Mandarin voice asks, Whisper (zh) hears it, the influenza page answers."""
    from rich.console import Console

    from app.cli import demo_steps as steps

    out = Console(record=True, width=160)
    run = steps.chinese_consultation(out, api, tokens["ann"], settings.data_dir, timeout_s=600)
    turn = run.turn
    assert turn["language"] == "zh" and "返回工作" in turn["transcript"], turn["transcript"]
    assert "24 小时" in turn["answer"] and any(c["cited"] for c in turn["citations"]), turn["answer"]
    assert run.reply_path is not None and sf.info(str(run.reply_path)).samplerate == 24000
    assert f"turn={run.turn_id} index=0 voice=baker" in worker.log()
    printed = out.export_text()
    assert "the Mandarin voice says" in printed and f"reply audio saved to {run.reply_path}" in printed


def test_without_a_chinese_voice_the_chinese_answer_stays_text(api, tokens, settings, worker, start_module_worker):
    """Runs last: the worker is replaced by one whose tts pool has no Chinese voice."""
    worker.stop()
    quiet = start_module_worker("all", timeout_s=240, **worker_env(settings), MEDVOICE_TTS_BAKER_VOICE="false")
    turn = ask(api, tokens["ann"], ZH_QUESTION, "zh")
    assert "30 mg" in turn["answer"], turn["answer"]
    types = [t for t, _ in turn["events"]]
    text_only = [d for t, d in turn["events"] if t == "text_only"]
    assert text_only and all(d["language"] == "zh" and d["code"] == "no_voice_for_language" for d in text_only)
    assert "audio" not in types and "audio_ready" not in types and types[-1] == "done"
    assert turn["status"] == "done" and turn["timings"]["tts"]["text_only"] == [d["index"] for d in text_only]
    assert not turn["has_reply_audio"]
    assert "voice=joe" not in quiet.log()  # the English voice was never handed the Chinese text
