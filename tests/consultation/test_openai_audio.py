"""The OpenAI-compatible audio routes, driven by the official `openai` client against a real uvicorn server,
a real worker (faster-whisper + Piper) and our own JWTs as the API key."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Iterator

import pytest

from tests.conftest import free_port, wait_for
from tests.consultation.audio_fixtures import bad_uploads, tone
from workers.core.settings import Settings

openai = pytest.importorskip("openai")

PHRASE = "The patient has a fever and a sore throat."
SRT_CUE = re.compile(r"^(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)$")
VTT_CUE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(.+)$")


def _seconds(stamp: str) -> float:
    h, m, rest = stamp.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(rest)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def base_url(settings: Settings) -> Iterator[str]:
    """A real HTTP server (uvicorn in a thread) serving the app on a free port: the openai client needs one."""
    import uvicorn

    from app.main import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn")
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(15)


@pytest.fixture(scope="module")
def client(base_url: str, tokens: dict[str, dict[str, str]]):
    key = tokens["ann"]["Authorization"].removeprefix("Bearer ")
    with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=300) as c:
        yield c


@pytest.fixture(scope="module")
def fever_wav(pipeline_worker, client) -> bytes:
    """The phrase spoken by the worker's Piper voice, fetched through audio.speech.create."""
    response = client.audio.speech.create(model="tts-1", voice="alloy", input=PHRASE, response_format="wav")
    return response.content


# ---- refused before any worker is involved ---------------------------------------------------------------
def test_a_missing_or_bad_key_is_401_in_openai_shape(base_url: str) -> None:
    import httpx

    r = httpx.post(
        f"{base_url}/audio/transcriptions", files={"file": ("q.wav", tone(1.0))}, data={"model": "whisper-1"}
    )
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "invalid_api_key" and r.json()["error"]["message"]
    with openai.OpenAI(base_url=base_url, api_key="not-a-jwt", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.audio.transcriptions.create(model="whisper-1", file=("q.wav", tone(1.0)))
        with pytest.raises(openai.AuthenticationError):
            bad.audio.speech.create(model="tts-1", voice="alloy", input="hello", response_format="wav")


@pytest.mark.parametrize(
    "case",
    [
        "empty file",
        "text named .wav",
        "truncated wav header",
        "wav named .flac",
        "unsupported extension",
        "no extension",
    ],
)
def test_bad_audio_is_refused_with_the_consultation_upload_statuses(client, case: str) -> None:
    filename, data, status, code = bad_uploads(30.0)[case]
    with pytest.raises(openai.APIStatusError) as info:
        client.audio.transcriptions.create(model="whisper-1", file=(filename, data))
    err = info.value
    assert err.status_code == status
    assert err.code == code and err.param == "file"
    assert err.body["message"] and err.type == "invalid_request_error"
    if status == 422:
        assert isinstance(err, openai.UnprocessableEntityError)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"model": "whisper-1", "response_format": "xml"}, "response_format"),
        ({"model": "whisper-9"}, "model"),
        ({"model": "whisper-1", "language": "klingon"}, "language"),
        ({"model": "whisper-1", "temperature": 3.0}, "temperature"),
        ({"model": "whisper-1", "timestamp_granularities": ["word"]}, "timestamp_granularities"),
    ],
)
def test_bad_transcription_parameters_are_400(client, params: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(file=("q.wav", tone(1.0)), **params)
    assert info.value.param == param and info.value.message


def test_a_declared_oversize_upload_is_413(base_url: str, tokens, settings: Settings) -> None:
    import httpx

    big = b"RIFF" + b"\0" * (settings.consult_max_audio_bytes + 1)
    r = httpx.post(
        f"{base_url}/audio/transcriptions",
        headers=tokens["ann"],
        files={"file": ("q.wav", big)},
        data={"model": "whisper-1"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "input_too_large"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"response_format": "mp3"}, "response_format"),
        ({"input": "   "}, "input"),
        ({"input": "x" * 601}, "input"),
        ({"voice": "bob"}, "voice"),
        ({"model": "tts-9"}, "model"),
        ({"speed": 9.0}, "speed"),
    ],
)
def test_bad_speech_requests_are_400(client, params: dict, param: str) -> None:
    request = {"model": "tts-1", "voice": "alloy", "input": "hello", "response_format": "wav", **params}
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(**request)
    assert info.value.param == param and info.value.message


# ---- through the worker ----------------------------------------------------------------------------------
def test_a_typed_worker_error_keeps_its_status(pipeline_worker, settings: Settings) -> None:
    from app import task_client
    from app.routes.openai_audio import OpenAIError
    from workers.core.errors import InputNotFound

    with pytest.raises(InputNotFound) as info:
        task_client.call("asr.transcribe", {"audio_ref": "audio/openai/nothing-here.wav"}, timeout_s=120)
    error = OpenAIError.from_typed(info.value)  # what OpenAIRoute answers with
    assert error.status_code == 404 and error.code == "input_not_found"
    assert json.loads(error.response().body)["error"]["type"] == "invalid_request_error"


def test_speech_is_a_wav_of_the_configured_voice(fever_wav: bytes) -> None:
    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(fever_wav))
    assert fever_wav[:4] == b"RIFF" and rate >= 16000
    assert 1.0 <= len(audio) / rate <= 10.0


def test_speech_as_raw_pcm_at_24khz(client, fever_wav: bytes) -> None:
    import numpy as np
    import soundfile as sf

    pcm = client.audio.speech.create(model="gpt-4o-mini-tts", voice="nova", input=PHRASE, response_format="pcm").content
    assert len(pcm) % 2 == 0 and pcm[:4] != b"RIFF"
    wav_s = sf.info(io.BytesIO(fever_wav)).duration
    assert abs(len(pcm) / 2 / 24000 - wav_s) < 0.25  # same speech, resampled to 24 kHz
    assert np.abs(np.frombuffer(pcm, dtype="<i2")).max() > 1000  # not silence


def test_transcription_in_every_format(client, fever_wav: bytes, settings: Settings) -> None:
    import soundfile as sf

    expected = {"fever", "sore", "throat"}
    file = ("fever.wav", fever_wav)
    duration = sf.info(io.BytesIO(fever_wav)).duration

    plain = client.audio.transcriptions.create(model="whisper-1", file=file)
    assert isinstance(plain, openai.types.audio.Transcription)
    assert expected <= _words(plain.text), plain.text

    verbose = client.audio.transcriptions.create(
        model="whisper-1",
        file=file,
        response_format="verbose_json",
        language="en",
        prompt="clinic consultation",
        temperature=0.0,
    )
    assert isinstance(verbose, openai.types.audio.TranscriptionVerbose)
    assert verbose.language == "english" and abs(verbose.duration - duration) < 0.1
    assert expected <= _words(verbose.text) and verbose.segments
    assert [s.id for s in verbose.segments] == list(range(len(verbose.segments)))
    assert all(0 <= s.start < s.end <= duration + 0.5 for s in verbose.segments)
    assert expected <= _words(" ".join(s.text for s in verbose.segments))

    text = client.audio.transcriptions.create(model="medvoice-asr", file=file, response_format="text")
    assert isinstance(text, str) and text.endswith("\n") and expected <= _words(text)

    srt = client.audio.transcriptions.create(model="whisper-1", file=file, response_format="srt")
    cues = [SRT_CUE.match(block) for block in srt.strip().split("\n\n")]
    assert cues and all(cues), srt
    assert [int(c.group(1)) for c in cues] == list(range(1, len(cues) + 1))
    assert all(_seconds(c.group(2)) < _seconds(c.group(3)) for c in cues)
    assert expected <= _words(" ".join(c.group(4) for c in cues))

    vtt = client.audio.transcriptions.create(model="whisper-1", file=file, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n")
    cues = [VTT_CUE.match(block) for block in vtt.removeprefix("WEBVTT\n\n").strip().split("\n\n")]
    assert cues and all(cues), vtt
    assert expected <= _words(" ".join(c.group(3) for c in cues))

    # This route keeps no audio: the stored uploads and the synthesized clips are gone.
    assert not list((settings.audio_dir / "openai").glob("*"))
    assert not list((settings.audio_dir / "tts" / "adhoc").glob("*.wav"))


def test_audited_without_text_and_logged_without_text(
    client, fever_wav: bytes, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy import select

    from workers.core.db import session_scope
    from workers.core.records import AuditEvent

    with caplog.at_level(logging.INFO, logger="medvoice.api.openai"):
        out = client.audio.transcriptions.create(model="whisper-1", file=("fever.wav", fever_wav))
    assert "fever" in out.text.lower()
    assert "openai transcription=" in caplog.text and "fever" not in caplog.text.lower()
    with session_scope(settings.resolved_database_url) as db:
        events = db.scalars(select(AuditEvent).where(AuditEvent.action.like("openai.%"))).all()
        rows = [(e.action, e.detail) for e in events]
    ok = [d for a, d in rows if a == "openai.transcription" and d.get("status") == 200]
    assert len(ok) >= 6 and all(d["language"] == "en" and d["audio_s"] > 1 for d in ok)
    assert any(a == "openai.transcription" and d.get("error") == "audio_unreadable" for a, d in rows)
    assert any(a == "openai.speech" and d.get("status") == 200 for a, d in rows)
    dumped = json.dumps(rows).lower()
    assert "fever" not in dumped and "throat" not in dumped


def test_malformed_speech_json_is_400(base_url: str, tokens) -> None:
    import httpx

    r = httpx.post(
        f"{base_url}/audio/speech", content=b"{not json", headers={**tokens["ann"], "Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["message"]
