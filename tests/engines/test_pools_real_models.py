"""Integration: the real small models serving their tasks through a real Celery worker on real Redis.

One worker consumes all four queues (`start_worker("all")` style) to save memory; it loads every engine
once in its pool process. Needs the weights (`medvoice models prepare`, run by `make test`); skips with
the reason otherwise. Eval speech comes from ../shared (skipped when absent).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import WorkerProcess, eval_data
from workers import modelfiles
from workers.core import errors, events
from workers.core.settings import Settings

RESULT_TIMEOUT_S = 300


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def _models_ready() -> str | None:
    s = Settings()
    try:
        modelfiles.resolve_asr(s)
        modelfiles.resolve_llm(s)
        modelfiles.resolve_piper(s)
    except errors.ModelError as exc:
        return f"model weights not prepared ({exc}); run `medvoice models prepare` (make test does)"
    return None


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, redis_url: str):
    reason = _models_ready()
    if reason:
        pytest.skip(reason)
    log_dir = tmp_path_factory.mktemp("worker-logs")
    w = WorkerProcess("all", {**os.environ, "MEDVOICE_TTS_BACKEND": "piper"}, log_dir / "worker-all.log")
    try:
        w.wait_ready(120)
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
def data_dir() -> Path:
    d = Settings().data_dir
    (d / "audio" / "in").mkdir(parents=True, exist_ok=True)
    return d


def run(name: str, *args, **kwargs):
    from workers.celery_app import celery_app

    return celery_app.send_task(name, args=args, kwargs=kwargs).get(timeout=RESULT_TIMEOUT_S)


def put_audio(data_dir: Path, src: Path) -> str:
    dest = data_dir / "audio" / "in" / f"{uuid.uuid4().hex[:8]}-{src.name}"
    shutil.copyfile(src, dest)
    return dest.relative_to(data_dir).as_posix()


def test_asr_transcribes_the_jfk_clip(worker, data_dir: Path) -> None:
    ref = put_audio(data_dir, eval_data("speech", "en_jfk_16k_mono.wav"))
    r = run("asr.transcribe", ref)
    assert "ask not what your country can do for you" in normalize(r["text"])
    assert r["language"] == "en" and r["audio_ref"] == ref
    assert r["segments"] and all(s["end"] > s["start"] >= 0 for s in r["segments"])
    assert 10.5 < r["duration_s"] < 11.5 and r["timings"]["rtf"] < 2.0


def test_asr_with_forced_chinese_and_hotwords(worker, data_dir: Path) -> None:
    ref = put_audio(data_dir, eval_data("speech", "funasr_example_0.wav"))
    r = run("asr.transcribe", ref, language="zh", hotwords="达摩院 语音识别", initial_prompt="以下是普通话的句子。")
    assert r["language"] == "zh"
    assert sum(1 for c in r["text"] if "\u4e00" <= c <= "\u9fff") >= 10, r["text"]
    assert "欢迎" in r["text"] and "模型" in r["text"]


def test_corrupt_audio_fails_typed_and_the_worker_keeps_serving(worker, data_dir: Path) -> None:
    bad = data_dir / "audio" / "in" / "corrupt.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(2000))
    with pytest.raises(errors.AudioUnreadable) as info:
        run("asr.transcribe", bad.relative_to(data_dir).as_posix())
    assert info.value.code == "audio_unreadable" and info.value.http_status == 422
    with pytest.raises(errors.InvalidReference):
        run("asr.transcribe", "../../etc/passwd")
    with pytest.raises(errors.InputNotFound):
        run("asr.transcribe", "audio/in/missing.wav")
    with pytest.raises(errors.EmptyInput):
        run("tts.synthesize", "   ")
    with pytest.raises(errors.InputTooLarge):
        run("tts.synthesize", "word " * 1000)
    # still serving, in the same pool process (the engine was not reloaded)
    pid_before = run("asr.ping")["pid"]
    ref = put_audio(data_dir, eval_data("speech", "en_jfk_16k_mono.wav"))
    assert "your country" in normalize(run("asr.transcribe", ref)["text"])
    assert run("asr.ping")["pid"] == pid_before
    assert worker.proc.poll() is None


def _cjk_ratio(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(1 for c in letters if "\u4e00" <= c <= "\u9fff") / max(1, len(letters))


def test_llm_answers_in_the_language_asked_and_streams_sentences(worker, redis_url: str) -> None:
    r = events.client(redis_url)
    en_turn, zh_turn = f"en-{uuid.uuid4().hex[:8]}", f"zh-{uuid.uuid4().hex[:8]}"
    en = run(
        "llm.generate",
        en_turn,
        question="What is a normal resting heart rate for adults?",
        max_tokens=60,
        temperature=0,
    )
    zh = run("llm.generate", zh_turn, question="成年人正常的静息心率是多少？", max_tokens=60, temperature=0)
    assert en["text"] and _cjk_ratio(en["text"]) == 0.0, en["text"]
    assert zh["text"] and _cjk_ratio(zh["text"]) > 0.5, zh["text"]
    for turn, res in ((en_turn, en), (zh_turn, zh)):
        evs = events.read_all(turn, r=r)
        sentences = [e for e in evs if e["type"] == "sentence"]
        assert [e["text"] for e in sentences] == res["sentences"]
        assert [e["index"] for e in sentences] == list(range(len(res["sentences"])))
        assert evs[-1]["type"] == "llm_done" and evs[-1]["cancelled"] is False
        t = res["timings"]
        assert 0 < t["first_token_s"] <= t["first_sentence_s"] <= t["total_s"] and t["tokens"] <= 60


def test_llm_stops_when_the_turn_is_cancelled(worker, redis_url: str) -> None:
    from workers.celery_app import celery_app

    r = events.client(redis_url)
    turn = f"cancel-{uuid.uuid4().hex[:8]}"
    res = celery_app.send_task(
        "llm.generate",
        args=[turn],
        kwargs={
            "question": "Explain in detail, step by step, how to manage type 2 diabetes in adults.",
            "max_tokens": 400,
            "temperature": 0,
        },
    )
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while not any(e["type"] == "sentence" for e in events.read_all(turn, r=r)):
        assert time.monotonic() < deadline and not res.ready(), "no sentence streamed"
        time.sleep(0.05)
    events.cancel(turn, r=r)
    out = res.get(timeout=RESULT_TIMEOUT_S)
    assert out["cancelled"] is True and out["finish_reason"] == "cancelled"
    assert out["timings"]["tokens"] < 400
    assert events.read_all(turn, r=r)[-1] == {
        "type": "llm_done",
        "sentences": len(out["sentences"]),
        "cancelled": True,
        "finish_reason": "cancelled",
        "timings": out["timings"],
    }
    # queued synthesis for a cancelled turn is dropped
    dropped = run("tts.synthesize", "This sentence is never spoken.", turn_id=turn, index=7)
    assert dropped["cancelled"] is True and dropped["audio_ref"] is None


def test_piper_speech_is_transcribed_back_by_the_asr_pool(worker, data_dir: Path, redis_url: str) -> None:
    turn = f"tts-{uuid.uuid4().hex[:8]}"
    sentence = "Please take two tablets every six hours with water."
    out = run("tts.synthesize", sentence, turn_id=turn, index=0)
    assert out["backend"] == "piper" and out["audio_ref"].startswith("audio/tts/")
    path = data_dir / out["audio_ref"]
    info = sf.info(str(path))
    assert info.subtype == "PCM_16" and info.channels == 1
    assert 1.0 < info.duration < 6.0 and info.duration == pytest.approx(out["duration_s"], abs=0.01)
    # The tests' voice has no sampling noise (MEDVOICE_TTS_NOISE_*=0): the same sentence, the same samples.
    # A second clip for the same turn and index (a re-delivered stage) is a file of its own.
    again = run("tts.synthesize", sentence, turn_id=turn, index=0)
    assert again["audio_ref"] != out["audio_ref"] and path.exists()
    assert np.array_equal(sf.read(str(path))[0], sf.read(str(data_dir / again["audio_ref"]))[0])
    heard = normalize(run("asr.transcribe", out["audio_ref"], language="en")["text"])
    for words in ("take two tablets", "every six hours", "water"):
        assert words in heard.replace("2", "two").replace("6", "six"), heard
    evs = events.read_all(turn, r=events.client(redis_url))
    assert evs == [
        {
            "type": "audio",
            "index": 0,
            "audio_ref": o["audio_ref"],
            "duration_s": o["duration_s"],
            "sample_rate": o["sample_rate"],
        }
        for o in (out, again)
    ]


def test_worker_log_holds_no_transcript_or_answer_text(worker) -> None:
    """Runs after the tests above: ids and timings only at INFO."""
    log = worker.log().lower()
    assert "asr.transcribe" in log and "succeeded" in log
    for text in ("ask not what your country", "every six hours", "resting heart rate", "静息心率"):
        assert text not in log


def test_rag_embed_returns_normalized_vectors(worker) -> None:
    out = run("rag.embed", ["Aspirin reduces fever.", "Insulin lowers blood glucose."])
    assert out["dim"] == 384 and len(out["vectors"]) == 2
    for v in out["vectors"]:
        assert len(v) == 384 and abs(sum(x * x for x in v) - 1.0) < 1e-3
    q = run("rag.embed", "what lowers blood sugar?", kind="query")["vectors"][0]
    sims = [sum(a * b for a, b in zip(q, v)) for v in out["vectors"]]
    assert sims[1] > sims[0]
    with pytest.raises(errors.EmptyInput):
        run("rag.embed", ["ok", "  "])
