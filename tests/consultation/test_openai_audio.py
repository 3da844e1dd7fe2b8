"""The OpenAI-compatible audio routes, driven by the official `openai` clients (sync and async) against a real
uvicorn server, a real worker (faster-whisper + Piper) and our own JWTs as the API key: transcriptions in every
format with word and segment timestamps, streamed transcripts, translations, speech in every format and
streamed."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from collections.abc import Iterator

import pytest

from tests.conftest import EVAL_DATA
from tests.consultation.audio_fixtures import bad_uploads, silence, tone
from tests.consultation.openai_server import async_client, key, serve, sync_client
from tests.consultation.shared import worker_env
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
    with serve(settings) as url:
        yield url


@pytest.fixture(scope="module")
def api_key(tokens) -> str:
    return key(tokens)


@pytest.fixture(scope="module")
def client(base_url: str, api_key: str):
    with sync_client(base_url, api_key) as c:
        yield c


@pytest.fixture(scope="module")
def pipeline_worker(start_module_worker, settings: Settings):
    """The module's worker cuts audio over 8 s into pieces of at most 5 s, so a long recording's word times are
    seen to stay on the whole recording's clock; every other clip here is shorter."""
    return start_module_worker(
        "all", timeout_s=240, **worker_env(settings), MEDVOICE_ASR_SPLIT_ABOVE_S="8", MEDVOICE_ASR_PIECE_MAX_S="5"
    )


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
        (
            {"model": "whisper-1", "response_format": "srt", "timestamp_granularities": ["segment"]},
            "timestamp_granularities",
        ),
        (
            {"model": "whisper-1", "response_format": "verbose_json", "timestamp_granularities": ["char"]},
            "timestamp_granularities",
        ),
        ({"model": "whisper-1", "response_format": "srt", "stream": True}, "response_format"),
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
        ({"response_format": "ogg"}, "response_format"),
        ({"stream_format": "video"}, "stream_format"),
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
    from app.routes.openai.errors import OpenAIError
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


# ---- word timestamps, streamed transcripts, translations -----------------------------------------------
def _check_words(words, duration: float) -> None:
    assert words and all(w.word.strip() for w in words)
    assert all(0 <= w.start <= w.end <= duration + 0.5 for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))  # in the order they were said


def test_word_and_segment_timestamps_as_openai_combines_them(client, fever_wav: bytes) -> None:
    import soundfile as sf

    duration = sf.info(io.BytesIO(fever_wav)).duration
    file = ("fever.wav", fever_wav)
    words_only = client.audio.transcriptions.create(
        model="whisper-1", file=file, response_format="verbose_json", timestamp_granularities=["word"], language="en"
    )
    assert isinstance(words_only, openai.types.audio.TranscriptionVerbose)
    assert words_only.segments is None  # only words were asked for
    _check_words(words_only.words, duration)
    assert {"fever", "sore", "throat"} <= _words(" ".join(w.word for w in words_only.words))

    both = client.audio.transcriptions.create(
        model="whisper-1",
        file=file,
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
    )
    assert both.segments and both.words
    assert [w.word for w in both.words] == [w.word for w in words_only.words]
    assert both.segments[0].start <= both.words[0].start and both.words[-1].end <= both.segments[-1].end + 0.01

    segments_only = client.audio.transcriptions.create(
        model="whisper-1", file=file, response_format="verbose_json", timestamp_granularities=["segment"]
    )
    assert segments_only.segments and segments_only.words is None


def test_a_long_recording_cut_into_pieces_keeps_word_times_on_its_own_clock(client, fever_wav: bytes) -> None:
    """Three sayings 3 s apart: over the worker's 8 s split, so each is transcribed as its own piece."""
    import numpy as np
    import soundfile as sf

    said, rate = sf.read(io.BytesIO(fever_wav), dtype="int16")
    gap = np.zeros(int(rate * 3.0), dtype=np.int16)
    audio = np.concatenate([said, gap, said, gap, said])
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    duration = len(audio) / rate
    assert duration > 8
    out = client.audio.transcriptions.create(
        model="whisper-1",
        file=("long.wav", buffer.getvalue()),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
    )
    _check_words(out.words, duration)
    throats = [w for w in out.words if "throat" in w.word.lower()]
    assert len(throats) == 3, [w.word for w in out.words]
    step = (len(said) + len(gap)) / rate  # each saying starts this much after the one before
    assert abs((throats[1].start - throats[0].start) - step) < 0.6
    assert abs((throats[2].start - throats[0].start) - 2 * step) < 0.6
    assert all(s.start <= s.end <= duration + 0.5 for s in out.segments)


def test_a_streamed_transcript_is_deltas_that_join_into_the_final_text(client, fever_wav: bytes) -> None:
    from openai.types.audio import TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent

    events = list(
        client.audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=("fever.wav", fever_wav), stream=True)
    )
    deltas = [e for e in events if isinstance(e, TranscriptionTextDeltaEvent)]
    done = [e for e in events if isinstance(e, TranscriptionTextDoneEvent)]
    assert deltas and len(done) == 1 and isinstance(events[-1], TranscriptionTextDoneEvent)
    assert "".join(d.delta for d in deltas) == done[0].text
    assert {"fever", "sore", "throat"} <= _words(done[0].text)
    plain = client.audio.transcriptions.create(model="whisper-1", file=("fever.wav", fever_wav))
    assert done[0].text == plain.text


def test_a_long_streamed_transcript_comes_segment_by_segment_in_order(base_url: str, api_key: str, fever_wav) -> None:
    """The async client; a recording of several pieces streams one delta per segment, in the order spoken."""
    import numpy as np
    import soundfile as sf

    said, rate = sf.read(io.BytesIO(fever_wav), dtype="int16")
    audio = np.concatenate([said, np.zeros(int(rate * 3.0), dtype=np.int16), said])
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")

    async def run() -> list:
        async with async_client(base_url, api_key) as c:
            stream = await c.audio.transcriptions.create(
                model="whisper-1", file=("two.wav", buffer.getvalue()), stream=True, language="en"
            )
            return [e async for e in stream]

    events = asyncio.run(run())
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) >= 2 and events[-1].type == "transcript.text.done"
    assert "".join(deltas) == events[-1].text
    assert _words(deltas[0]) >= {"fever"} and deltas[1].startswith(" ")


def test_word_timestamps_and_streams_refuse_what_they_cannot_do(client, fever_wav: bytes) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(
            model="whisper-1", file=("fever.wav", fever_wav), stream=True, timestamp_granularities=["word"]
        )
    assert info.value.param == "timestamp_granularities"
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.translations.create(model="whisper-9", file=("fever.wav", fever_wav))
    assert info.value.param == "model" and info.value.code == "model_not_found"


CHINESE_CLIP = EVAL_DATA / "speech" / "funasr_example_0.wav"  # 欢迎大家来体验达摩院推出的语音识别模型


@pytest.mark.skipif(not CHINESE_CLIP.exists(), reason=f"{CHINESE_CLIP} is not here (../shared/eval-data)")
def test_a_chinese_recording_translates_into_english_text(pipeline_worker, client) -> None:
    data = CHINESE_CLIP.read_bytes()
    heard = client.audio.transcriptions.create(model="whisper-1", file=("zh.wav", data), language="zh")
    assert re.search(r"[\u4e00-\u9fff]", heard.text), heard.text  # it is Chinese speech
    out = client.audio.translations.create(model="whisper-1", file=("zh.wav", data))
    assert isinstance(out, openai.types.audio.Translation)
    assert not re.search(r"[\u4e00-\u9fff]", out.text), out.text
    assert len(re.findall(r"[A-Za-z]+", out.text)) >= 3 and "welcome" in out.text.lower(), out.text
    verbose = client.audio.translations.create(model="whisper-1", file=("zh.wav", data), response_format="verbose_json")
    assert isinstance(verbose, openai.types.audio.TranslationVerbose)
    assert verbose.language == "english" and verbose.segments and abs(verbose.duration - 5.55) < 0.2
    srt = client.audio.translations.create(model="whisper-1", file=("zh.wav", data), response_format="srt")
    assert SRT_CUE.match(srt.strip().split("\n\n")[0]), srt


# ---- speech formats and streamed speech ------------------------------------------------------------------
def _decoded_seconds(data: bytes) -> tuple[float, int]:
    import av

    with av.open(io.BytesIO(data)) as container:
        samples, rate = 0, 0
        for frame in container.decode(audio=0):
            samples, rate = samples + frame.samples, frame.sample_rate
    return samples / rate, rate


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_speech_in_every_format_decodes_to_the_same_length(client, fever_wav: bytes, fmt: str) -> None:
    import soundfile as sf

    expected = sf.info(io.BytesIO(fever_wav)).duration
    data = client.audio.speech.create(model="tts-1", voice="echo", input=PHRASE, response_format=fmt).content
    if fmt == "pcm":
        seconds, rate = len(data) / 2 / 24000, 24000
    else:
        seconds, rate = _decoded_seconds(data)
    assert rate == (48000 if fmt == "opus" else 24000)
    assert abs(seconds - expected) < 0.15, (fmt, seconds, expected)


def test_speech_defaults_to_mp3_like_openai(pipeline_worker, client) -> None:
    r = client.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input="Take it with food.")
    assert r.headers["content-type"] == "audio/mpeg"
    assert _decoded_seconds(r.content)[0] > 0.5


LONG_TEXT = (
    "Amoxicillin is taken three times a day. Take each dose with a glass of water. "
    "Finish the whole course even when you feel better. Come back if the fever lasts more than three days. "
    "Paracetamol helps with the ear pain."
)


def test_streamed_speech_sends_the_first_sentence_before_the_rest_is_synthesized(pipeline_worker, client) -> None:
    started = time.perf_counter()
    arrivals: list[tuple[float, int]] = []
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=LONG_TEXT, response_format="pcm", stream_format="audio"
    ) as response:
        assert response.headers["content-type"] == "audio/pcm"
        for chunk in response.iter_bytes():
            arrivals.append((time.perf_counter() - started, len(chunk)))
    first, last = arrivals[0][0], arrivals[-1][0]
    total = sum(n for _t, n in arrivals)
    # Five sentences spoken one after another on the tts pool: the first is heard long before the last is made.
    assert first < 0.6 * last, arrivals
    whole = client.audio.speech.create(model="tts-1", voice="alloy", input=LONG_TEXT, response_format="pcm").content
    assert abs(total / 2 / 24000 - len(whole) / 2 / 24000) < 1.5  # the same speech, with pauses between sentences


def test_streamed_mp3_and_sse_from_the_async_client(pipeline_worker, base_url: str, api_key: str) -> None:
    import base64

    async def run() -> tuple[bytes, list]:
        async with async_client(base_url, api_key) as c:
            mp3 = await c.audio.speech.create(
                model="tts-1", voice="nova", input=LONG_TEXT, response_format="mp3", stream_format="audio"
            )
            async with c.audio.speech.with_streaming_response.create(
                model="tts-1", voice="nova", input="Rest. Drink water.", response_format="wav", stream_format="sse"
            ) as r:
                lines = [line async for line in r.iter_lines() if line.startswith("data: ")]
            return mp3.content, [json.loads(line[6:]) for line in lines]

    mp3, events = asyncio.run(run())
    assert _decoded_seconds(mp3)[0] > 5
    assert events[-1]["type"] == "speech.audio.done" and events[0]["type"] == "speech.audio.delta"
    wav = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert wav[:4] == b"RIFF" and _decoded_seconds(wav)[0] > 0.8


def test_silence_streams_no_delta_and_an_empty_transcript(pipeline_worker, client) -> None:
    events = list(client.audio.transcriptions.create(model="whisper-1", file=("quiet.wav", silence(2.0)), stream=True))
    assert [e.type for e in events] == ["transcript.text.done"] and events[0].text == ""


def test_the_pools_own_voices_are_spoken_by_id_and_listed(pipeline_worker, client) -> None:
    voices = client.models.retrieve("tts-1").model_extra["voices"]
    ours = [v for v in voices if "alias_of" not in v]
    if not ours:
        pytest.skip("this tts pool lists no voices of its own (no tts.voices task)")
    english = next(v for v in ours if v.get("language") == "en")
    data = client.audio.speech.create(model="tts-1", voice=english["id"], input=PHRASE, response_format="flac").content
    seconds, rate = _decoded_seconds(data)
    assert rate == 24000 and seconds > 1
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(model="tts-1", voice="not-a-voice", input=PHRASE)
    assert info.value.code == "unknown_voice" and english["id"] in info.value.message
