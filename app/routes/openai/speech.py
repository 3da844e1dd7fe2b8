"""Text to speech, OpenAI-compatible: POST /v1/audio/speech.

JSON {model, input, voice, response_format (mp3 | opus | aac | flac | wav | pcm; mp3 by default, as OpenAI's),
speed (0.25..4; omitted → MEDVOICE_TTS_SPEED), instructions (accepted, ignored), stream_format (audio | sse)}.

- Without `stream_format` the whole input is one `tts.synthesize` on the tts pool; its WAV is read, deleted and
  encoded (app/routes/openai/encode.py).
- `stream_format="audio"`: the input is cut into sentences, all sent to the tts pool at once (spoken in order),
  and each is encoded and sent as soon as its clip is ready, so the first words play while the rest is still
  being synthesized. `"sse"`: the same audio as base64 `speech.audio.delta` events, then `speech.audio.done`.
- `voice`: OpenAI's voice names (alloy ... cedar, default) speak with the default voice, in the language of the
  text; the tts pool's own voice ids (`tts.voices`, e.g. `joe`, `baker`) are accepted as they are, when the
  pool has that task. Anything else is a 400 `unknown_voice`.
Nothing of the input text is logged or audited.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app import task_client
from app.deps import AppSettings, CurrentUser, DbSession
from app.routes.openai.encode import FORMATS, Encoder, decode_pcm, encode
from app.routes.openai.errors import OpenAIError, OpenAIRoute, as_openai, audit_call, bad_request, failure, task_timeout
from app.routes.openai.names import OPENAI_VOICES, SPEECH_MODELS
from knowledge.spoken import pieces
from knowledge.text import detect_language, split_sentences
from workers.core.db import new_session
from workers.core.errors import MedvoiceError, WorkerFailed
from workers.core.records import User, new_id
from workers.core.refs import resolve_ref
from workers.core.settings import Settings

log = logging.getLogger("medvoice.api.openai")
router = APIRouter(prefix="/v1/audio", tags=["openai-compatible"], route_class=OpenAIRoute)

STREAM_FORMATS = ("audio", "sse")
VOICES_PROBE_S = 2.0  # how long to wait for the tts pool's voice list
VOICES_KEEP_S = 60.0  # how long an answer (or its absence) is kept before asking again


class SpeechIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str
    voice: str | dict[str, Any] = "default"
    response_format: str = "mp3"
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    instructions: str | None = None  # accepted, ignored: the voices here take no style prompt
    stream_format: str | None = None


# ---- voices -----------------------------------------------------------------------------------------------
_voices: dict[str, Any] = {"at": -1e9, "list": None}


def pool_voices(settings: Settings) -> list[dict[str, Any]] | None:
    """The tts pool's voices ([{id, language, backend, sample_rate, license, default}]), asked at most once a
    minute; None when the pool does not answer `tts.voices` (a pool that speaks with its one configured voice)."""
    now = time.monotonic()
    if now - _voices["at"] < VOICES_KEEP_S:
        return _voices["list"]
    try:
        found = task_client.call("tts.voices", timeout_s=VOICES_PROBE_S)
        listed = (
            [v for v in found if isinstance(v, dict) and isinstance(v.get("id"), str)]
            if isinstance(found, list)
            else None
        )
    except MedvoiceError:
        listed = None
    _voices.update(at=now, list=listed)
    return listed


def resolve_voice(name: Any, text: str, settings: Settings) -> dict[str, Any]:
    """The tts.synthesize arguments a requested voice means: {} (the pool's default), {voice}, {language}."""
    if isinstance(name, dict):  # OpenAI's custom-voice form {"id": ...}
        name = name.get("id")
    if not isinstance(name, str) or not name.strip():
        raise bad_request("'voice' must be a voice name", "voice", "unknown_voice")
    key = name.strip()
    voices = pool_voices(settings)
    if key.lower() in OPENAI_VOICES:
        if voices is None:
            return {}  # a pool with one voice: it speaks every text with it
        return {"language": detect_language(text)}  # the default voice of the text's language
    if voices is not None and key in {v["id"] for v in voices}:
        return {"voice": key}
    ours = [v["id"] for v in voices or []]
    raise bad_request(
        f"unknown voice '{key}'; use one of: " + ", ".join([*ours, *OPENAI_VOICES]), "voice", "unknown_voice"
    )


def _check(body: SpeechIn, settings: Settings) -> None:
    if body.model not in SPEECH_MODELS:
        raise bad_request(
            f"unknown model '{body.model}'; this server speaks with: " + ", ".join(SPEECH_MODELS),
            "model",
            "model_not_found",
        )
    if body.response_format not in FORMATS:
        raise bad_request(
            f"unsupported response_format '{body.response_format}'; use one of: " + ", ".join(FORMATS),
            "response_format",
        )
    if body.stream_format is not None and body.stream_format not in STREAM_FORMATS:
        raise bad_request("stream_format must be 'audio' or 'sse'", "stream_format")
    if not body.input.strip():
        raise bad_request("'input' is empty", "input", "empty_input")
    if len(body.input) > settings.tts_max_chars:
        raise bad_request(f"'input' longer than {settings.tts_max_chars} characters", "input", "input_too_large")


# ---- synthesis --------------------------------------------------------------------------------------------
def _read_and_delete(settings: Settings, ref: str) -> bytes:
    path = resolve_ref(settings, ref)
    try:
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def _clip(settings: Settings, out: Any) -> Any:
    """A finished tts.synthesize reply → its samples at 24 kHz (the clip's file deleted)."""
    if not isinstance(out, dict) or not out.get("audio_ref"):
        raise WorkerFailed("the tts worker returned no audio", {"task": "tts.synthesize", "pool": "tts"})
    return decode_pcm(_read_and_delete(settings, out["audio_ref"]))


def sentences(text: str, max_chars: int) -> list[str]:
    """The input as the sentences it is spoken in, one clip each."""
    return [p for s in split_sentences(text) for p in pieces(s, max_chars)] or [text.strip()]


class _Call:
    def __init__(self, user: User, settings: Settings, body: SpeechIn) -> None:
        self.id, self.user, self.settings = new_id(), user, settings
        self.started = time.perf_counter()
        voice = body.voice if isinstance(body.voice, str) else str(body.voice.get("id"))
        self.detail: dict[str, Any] = {
            "model": body.model,
            "voice": voice[:64],
            "response_format": body.response_format,
            "chars": len(body.input),
        }
        if body.stream_format:
            self.detail["stream_format"] = body.stream_format

    def end(self) -> None:
        d = self.detail
        d["took_ms"] = round((time.perf_counter() - self.started) * 1000, 1)
        log.info(
            "openai speech=%s user=%s status=%s error=%s chars=%d audio=%ss format=%s took=%sms",
            self.id,
            self.user.id,
            d.get("status", 500),
            d.get("error"),
            d["chars"],
            d.get("audio_s"),
            d["response_format"],
            d["took_ms"],
        )
        db = new_session(self.settings.resolved_database_url)
        try:
            audit_call(db, self.user, "openai.speech", "openai_audio", self.id, d)
        finally:
            db.close()


@router.post(
    "/speech",
    response_class=Response,
    responses={200: {"content": {f.media_type: {} for f in FORMATS.values()}, "description": "the speech"}},
)
async def create_speech(body: SpeechIn, user: CurrentUser, db: DbSession, settings: AppSettings) -> Response:
    """Synthesize speech (OpenAI `audio.speech.create`)."""
    await run_in_threadpool(db.rollback)
    call = _Call(user, settings, body)
    streaming = False
    try:
        _check(body, settings)
        voice = await run_in_threadpool(resolve_voice, body.voice, body.input, settings)
        media_type = FORMATS[body.response_format].media_type
        if body.stream_format:
            sent = await run_in_threadpool(_send_sentences, body, voice, settings)
            streaming = True  # from here the stream ends the call
            return StreamingResponse(
                _speech_stream(call, sent, body.response_format, body.stream_format == "sse"),
                media_type="text/event-stream" if body.stream_format == "sse" else media_type,
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        out = await task_client.call_async(
            "tts.synthesize", {"text": body.input, "speed": body.speed, **voice}, timeout_s=task_timeout(settings)
        )
        samples = await run_in_threadpool(_clip, settings, out)
        call.detail.update(status=200, audio_s=round(samples.size / 24000, 3))
        return Response(await run_in_threadpool(encode, samples, body.response_format), media_type=media_type)
    except (OpenAIError, MedvoiceError) as exc:
        call.detail.update(failure(exc))
        raise
    finally:
        if not streaming:
            await run_in_threadpool(call.end)


def _send_sentences(body: SpeechIn, voice: dict[str, Any], settings: Settings) -> list[task_client.Sent]:
    """Every sentence to the tts pool now: queued in order, they are spoken in order."""
    timeout = task_timeout(settings)
    return [
        task_client.send("tts.synthesize", {"text": text, "speed": body.speed, **voice}, expires_s=timeout)
        for text in sentences(body.input, settings.tts_max_chars)
    ]


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


async def _speech_stream(
    call: _Call, sent: list[task_client.Sent], response_format: str, sse: bool
) -> AsyncIterator[bytes | str]:
    """Each sentence's audio as soon as its clip is ready, in order; a pause between sentences, as in a reply."""
    import numpy as np

    settings = call.settings
    encoder = Encoder(response_format, stream=True)
    gap = np.zeros(int(24000 * settings.consult_reply_gap_s), dtype="<i2")
    audio_s = 0.0
    taken = 0
    try:
        for index, one in enumerate(sent):
            out = await run_in_threadpool(task_client.wait, one, task_timeout(settings))
            taken = index + 1
            samples = await run_in_threadpool(_clip, settings, out)
            if index:
                samples = np.concatenate([gap, samples])
            audio_s += samples.size / 24000
            data = await run_in_threadpool(encoder.feed, samples)
            if data:
                yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}) if sse else data
        data = await run_in_threadpool(encoder.close)
        if sse:
            if data:
                yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
            yield _sse({"type": "speech.audio.done"})
        elif data:
            yield data
        call.detail.update(status=200, audio_s=round(audio_s, 3), sentences=len(sent))
    except Exception as exc:  # noqa: BLE001 - the status line has gone: the stream stops short, the audit says why
        err = as_openai(exc)
        call.detail.update(failure(err))
        if sse:
            yield err.sse()
    finally:
        with anyio.CancelScope(shield=True):  # a client that left cancels the stream: still tidy up and audit
            await run_in_threadpool(_abandon, settings, sent[taken:])
            await run_in_threadpool(call.end)


def _abandon(settings: Settings, rest: list[task_client.Sent]) -> None:
    """Sentences nobody will hear (the client left, or one failed): revoked, and any clip already made deleted."""
    for one in rest:
        try:
            if one.result.ready():
                out = one.result.get(timeout=1, propagate=False)
                if isinstance(out, dict) and out.get("audio_ref"):
                    resolve_ref(settings, out["audio_ref"]).unlink(missing_ok=True)
            else:
                one.result.revoke()
        except Exception:  # tidying up only
            log.debug("speech clip not tidied", exc_info=True)
