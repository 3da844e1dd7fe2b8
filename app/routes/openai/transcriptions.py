"""Speech to text, OpenAI-compatible: POST /v1/audio/transcriptions and POST /v1/audio/translations.

    transcriptions  multipart `file`, `model`, optional `language`, `prompt`, `response_format` (json | text |
                    srt | vtt | verbose_json), `timestamp_granularities[]` (segment | word, with verbose_json),
                    `temperature`, `stream` → the transcript, or Server-Sent Events `transcript.text.delta`
                    ({delta}, one per segment as it is decoded) and a final `transcript.text.done` ({text})
    translations    the same upload → English text (Whisper's task "translate"); the same formats, no words,
                    no stream; `language` optional (the spoken language, detected when omitted)

The upload is checked exactly like a consultation upload (app/audio.py: extension, size, decode, duration,
empty) before it is stored under <audio_dir>/openai/<id>.<ext>; `asr.transcribe` is sent to the asr pool by
name and awaited off the event loop; the stored file is deleted afterwards whatever happened (these routes
keep no audio). A streamed transcript follows the task's own Redis stream (`segment` events) while the task
runs. verbose_json `language` is Whisper's full lower-case name ("english"), as OpenAI's whisper-1 returns it;
`language` in the request takes a code ("en") or that name; `temperature` is checked (0..1) and ignored.
Neither transcript nor prompt is logged or audited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.datastructures import UploadFile

from app import task_client
from app.audio import extension_of, validate_audio
from app.deps import AppSettings, CurrentUser, DbSession
from app.routes.openai.errors import (
    OpenAIError,
    OpenAIRoute,
    as_openai,
    audit_call,
    bad_request,
    failure,
    task_timeout,
)
from app.routes.openai.names import LANGUAGE_CODES, LANGUAGES, TRANSCRIPTION_MODELS
from app.uploads import MULTIPART_OVERHEAD, body_limited, read_upload, store_upload
from workers.core import events
from workers.core.db import new_session
from workers.core.errors import InputTooLarge, MedvoiceError
from workers.core.records import User, new_id
from workers.core.refs import to_ref
from workers.core.settings import Settings

log = logging.getLogger("medvoice.api.openai")
router = APIRouter(prefix="/v1/audio", tags=["openai-compatible"], route_class=OpenAIRoute)

TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STREAM_FORMATS = ("json", "text")
GRANULARITIES = ("segment", "word")
MAX_PROMPT_CHARS = 1000  # what asr.transcribe accepts as initial_prompt
WIDE_LANGUAGES = ("zh", "ja", "yue")  # written without spaces: a transcript's segments join with nothing
STREAM_POLL_MS = 200  # how long one read of a streamed transcript waits before it looks at the task again


# ---- parameters -------------------------------------------------------------------------------------------
def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a text field, not a file", name)
    return value.strip()


def _language(value: str | None) -> str | None:
    if not value:
        return None
    key = value.strip().lower()
    if key in LANGUAGES:
        return key
    if key in LANGUAGE_CODES:
        return LANGUAGE_CODES[key]
    raise bad_request(
        f"unsupported language '{value}'; send an ISO-639-1 code such as 'en' or 'zh'",
        "language",
        "unsupported_language",
    )


def _flag(form: Any, name: str) -> bool:
    value = (_field(form, name) or "false").lower()
    if value not in ("true", "false", "1", "0", ""):
        raise bad_request(f"'{name}' must be true or false", name)
    return value in ("true", "1")


def _options(form: Any, task: str) -> dict[str, Any]:
    """The request's parameters, every one checked (400 with its name otherwise)."""
    model = _field(form, "model")
    if not model:
        raise bad_request("'model' is required; use 'whisper-1'", "model", "missing_required_parameter")
    if model not in TRANSCRIPTION_MODELS:
        raise bad_request(
            f"unknown model '{model}'; this server transcribes with: " + ", ".join(TRANSCRIPTION_MODELS),
            "model",
            "model_not_found",
        )
    response_format = _field(form, "response_format") or "json"
    if response_format not in TRANSCRIPTION_FORMATS:
        raise bad_request(
            f"unsupported response_format '{response_format}'; use one of: " + ", ".join(TRANSCRIPTION_FORMATS),
            "response_format",
        )
    prompt = _field(form, "prompt") or None
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise bad_request(f"'prompt' longer than {MAX_PROMPT_CHARS} characters", "prompt")
    temperature = _field(form, "temperature")
    if temperature:
        try:
            t = float(temperature)
        except ValueError:
            t = -1.0
        if not 0.0 <= t <= 1.0:
            raise bad_request("'temperature' must be a number between 0 and 1", "temperature")
    stream = _flag(form, "stream")
    granularities = [g for key in ("timestamp_granularities[]", "timestamp_granularities") for g in form.getlist(key)]
    for g in granularities:
        if g not in GRANULARITIES:
            raise bad_request(
                f"unknown timestamp granularity '{g}'; use 'segment' or 'word'", "timestamp_granularities"
            )
    if task == "translate" and (granularities or stream):
        param = "stream" if stream else "timestamp_granularities"
        raise bad_request(f"'{param}' is not supported for translations", param)
    if granularities and response_format != "verbose_json":
        raise bad_request("timestamp_granularities requires response_format 'verbose_json'", "timestamp_granularities")
    if stream and response_format not in STREAM_FORMATS:
        raise bad_request(
            f"a streamed transcript is text: response_format 'json' or 'text', not '{response_format}'",
            "response_format",
        )
    return {
        "model": model,
        "response_format": response_format,
        "prompt": prompt,
        "language": _language(_field(form, "language")),
        "words": "word" in granularities,
        # OpenAI's rule: segments unless only words were asked for.
        "segments": not granularities or "segment" in granularities,
        "stream": stream,
        "task": task,
    }


# ---- formats ----------------------------------------------------------------------------------------------
def _timestamp(seconds: float, decimal: str) -> str:
    """HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (WebVTT)."""
    ms = max(0, round(float(seconds) * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def to_srt(segments: list[dict[str, Any]]) -> str:
    return "".join(
        f"{i}\n{_timestamp(s['start'], ',')} --> {_timestamp(s['end'], ',')}\n{s['text'].strip()}\n\n"
        for i, s in enumerate(segments, start=1)
    )


def to_vtt(segments: list[dict[str, Any]]) -> str:
    return "WEBVTT\n\n" + "".join(
        f"{_timestamp(s['start'], '.')} --> {_timestamp(s['end'], '.')}\n{s['text'].strip()}\n\n" for s in segments
    )


def _compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return round(len(raw) / len(zlib.compress(raw)), 4) if raw else 0.0


def to_verbose(result: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    translate = options["task"] == "translate"
    code = "en" if translate else result.get("language") or ""
    out: dict[str, Any] = {
        "task": options["task"],
        "language": LANGUAGES.get(code, code),
        "duration": result["duration_s"],
        "text": result["text"],
    }
    if options["segments"]:
        out["segments"] = [
            {
                "id": i,
                "seek": int(round(float(s["start"]) * 100)),
                "start": s["start"],
                "end": s["end"],
                "text": s["text"],
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": s.get("avg_logprob", 0.0),
                "compression_ratio": _compression_ratio(s["text"]),
                "no_speech_prob": s.get("no_speech_prob", 0.0),
            }
            for i, s in enumerate(result.get("segments") or [])
        ]
    if options["words"]:
        out["words"] = [{"word": w["word"], "start": w["start"], "end": w["end"]} for w in result.get("words") or []]
    if not translate:
        out["usage"] = {"type": "duration", "seconds": result["duration_s"]}
    return out


def render(result: dict[str, Any], options: dict[str, Any]) -> Response:
    response_format = options["response_format"]
    if response_format == "json":
        return JSONResponse({"text": result["text"]})
    if response_format == "verbose_json":
        return JSONResponse(to_verbose(result, options))
    if response_format == "text":
        return PlainTextResponse(result["text"] + "\n")
    if response_format == "srt":
        return PlainTextResponse(to_srt(result.get("segments") or []), media_type="application/x-subrip")
    return PlainTextResponse(to_vtt(result.get("segments") or []), media_type="text/vtt")


# ---- the upload -------------------------------------------------------------------------------------------
def _too_large(settings: Settings) -> MedvoiceError:
    return InputTooLarge(
        f"audio larger than the limit of {settings.consult_max_audio_bytes} bytes",
        {"max_bytes": settings.consult_max_audio_bytes, "field": "file"},
    )


async def _receive(
    request: Request, settings: Settings, call_id: str, task: str, detail: dict[str, Any]
) -> tuple[dict[str, Any], Path]:
    """The checked parameters and the checked upload, stored under <audio_dir>/openai/ (the caller deletes it)."""
    limit = settings.consult_max_audio_bytes + MULTIPART_OVERHEAD
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise OpenAIError.from_typed(_too_large(settings))
    ctype = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if ctype != "multipart/form-data":
        raise bad_request("send multipart/form-data with the audio in a part named 'file'", "file")
    try:
        form = await body_limited(request, limit).form(max_files=1, max_fields=16)
    except MedvoiceError:
        raise
    except Exception as exc:  # noqa: BLE001 - starlette raises for malformed or too many parts
        raise bad_request(
            f"malformed multipart body: {getattr(exc, 'detail', None) or type(exc).__name__}", "file"
        ) from None
    try:
        options = _options(form, task)
        detail.update(model=options["model"], response_format=options["response_format"])
        if options["words"]:
            detail["words"] = True
        if options["stream"]:
            detail["stream"] = True
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise bad_request(
                "the audio goes in a multipart file part named 'file'", "file", "missing_required_parameter"
            )
        try:
            extension_of(upload.filename, settings)  # 415 before reading an upload of an unsupported format
            data = await read_upload(upload, settings.consult_max_audio_bytes)
        except MedvoiceError as exc:
            raise OpenAIError.from_typed(exc, param="file") from None
        filename = upload.filename
    finally:
        await form.close()
    try:
        info = await run_in_threadpool(validate_audio, data, filename, settings)
    except MedvoiceError as exc:
        raise OpenAIError.from_typed(exc, param="file") from None
    detail.update(audio_s=info.duration_s, bytes=info.bytes, codec=info.codec)
    path = await run_in_threadpool(store_upload, settings.audio_dir / "openai" / f"{call_id}.{info.extension}", data)
    return options, path


def _task_kwargs(settings: Settings, path: Path, options: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "audio_ref": to_ref(settings, path),
        "language": options["language"],
        "initial_prompt": options["prompt"],
    }
    if options["words"]:
        kwargs["word_timestamps"] = True
    if options["task"] != "transcribe":
        kwargs["task"] = options["task"]
    return kwargs


class _Call:
    """One call's bookkeeping: its id, clock, audit detail; `end` logs it, audits it and deletes the upload."""

    def __init__(self, user: User, settings: Settings, task: str) -> None:
        self.id, self.user, self.settings, self.task = new_id(), user, settings, task
        self.started = time.perf_counter()
        self.detail: dict[str, Any] = {}
        self.path: Path | None = None

    def end(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)  # these routes keep no audio
            self.path = None
        d = self.detail
        d["took_ms"] = round((time.perf_counter() - self.started) * 1000, 1)
        log.info(
            "openai %s=%s user=%s status=%s error=%s audio=%ss lang=%s format=%s took=%sms",
            "translation" if self.task == "translate" else "transcription",
            self.id,
            self.user.id,
            d.get("status", 500),
            d.get("error"),
            d.get("audio_s"),
            d.get("language"),
            d.get("response_format"),
            d["took_ms"],
        )
        action = "openai.translation" if self.task == "translate" else "openai.transcription"
        db = new_session(self.settings.resolved_database_url)
        try:
            audit_call(db, self.user, action, "openai_audio", self.id, d)
        finally:
            db.close()


async def _speech_to_text(request: Request, user: User, settings: Settings, task: str) -> Response:
    call = _Call(user, settings, task)
    streaming = False
    try:
        options, call.path = await _receive(request, settings, call.id, task, call.detail)
        kwargs = _task_kwargs(settings, call.path, options)
        if options["stream"]:
            stream_id = f"openai-asr-{call.id}"
            sent = await run_in_threadpool(
                task_client.send, "asr.transcribe", {**kwargs, "stream_id": stream_id}, expires_s=task_timeout(settings)
            )
            streaming = True  # from here the stream ends the call
            return StreamingResponse(
                _transcript_stream(call, sent, stream_id),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        result = await task_client.call_async("asr.transcribe", kwargs, timeout_s=task_timeout(settings))
        call.detail.update(language=result.get("language"), segments=len(result.get("segments") or []), status=200)
        return render(result, options)
    except (OpenAIError, MedvoiceError) as exc:
        call.detail.update(failure(exc))
        raise
    finally:
        if not streaming:
            await run_in_threadpool(call.end)


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _transcript_stream(call: _Call, sent: task_client.Sent, stream_id: str) -> AsyncIterator[str]:
    """Each segment on the task's stream as a `transcript.text.delta`, then `transcript.text.done` from its reply.

    The deltas join as the transcript does (a space between segments, nothing in a CJK script), so they
    concatenate to the final text. A failure after the stream began is its last event, in OpenAI's shape."""
    import redis.asyncio as aioredis

    settings = call.settings
    r = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    key = events.stream_key(stream_id)
    reply = asyncio.ensure_future(run_in_threadpool(task_client.wait, sent, task_timeout(settings)))
    after, count = "0-0", 0
    try:
        while True:
            finished = reply.done()  # read once more after the task finished: it wrote every segment first
            got = await r.xread({key: after}, count=100, block=None if finished else STREAM_POLL_MS)
            for _key, batch in got or []:
                for event_id, fields in batch:
                    after = event_id
                    data = json.loads(fields.get("data") or "{}")
                    text = (data.get("text") or "").strip()
                    if fields.get("type") != "segment" or not text:
                        continue
                    sep = "" if (data.get("language") or "") in WIDE_LANGUAGES else " "
                    yield _sse({"type": "transcript.text.delta", "delta": (sep if count else "") + text})
                    count += 1
            if finished:
                break
        result = reply.result()
        call.detail.update(language=result.get("language"), segments=count, status=200)
        yield _sse({"type": "transcript.text.done", "text": result["text"]})
    except Exception as exc:  # noqa: BLE001 - a failure mid-stream can only be told as the stream's last event
        err = as_openai(exc)
        call.detail.update(failure(err))
        yield err.sse()
    finally:
        with anyio.CancelScope(shield=True):  # a client that left cancels the stream: still tidy up and audit
            try:
                await r.delete(key)
            finally:
                await r.aclose()
                await run_in_threadpool(call.end)


def _body(formats: tuple[str, ...], words: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "file": {"type": "string", "format": "binary"},
        "model": {"type": "string", "enum": list(TRANSCRIPTION_MODELS)},
        "language": {"type": "string", "description": "ISO-639-1 code, e.g. en or zh; detected when omitted"},
        "prompt": {"type": "string", "maxLength": MAX_PROMPT_CHARS},
        "response_format": {"type": "string", "enum": list(formats), "default": "json"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1, "description": "accepted, ignored"},
    }
    if words:
        properties["timestamp_granularities[]"] = {
            "type": "array",
            "items": {"type": "string", "enum": list(GRANULARITIES)},
            "description": "with verbose_json: word and/or segment timestamps",
        }
        properties["stream"] = {"type": "boolean", "description": "Server-Sent Events transcript.text.delta/done"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["file", "model"], "properties": properties}
                }
            },
        }
    }


@router.post("/transcriptions", openapi_extra=_body(TRANSCRIPTION_FORMATS, words=True))
async def create_transcription(request: Request, user: CurrentUser, db: DbSession, settings: AppSettings) -> Response:
    """Transcribe an audio file (OpenAI `audio.transcriptions.create`)."""
    await run_in_threadpool(db.rollback)  # hold no read transaction while the upload is read and transcribed
    return await _speech_to_text(request, user, settings, "transcribe")


@router.post("/translations", openapi_extra=_body(TRANSCRIPTION_FORMATS, words=False))
async def create_translation(request: Request, user: CurrentUser, db: DbSession, settings: AppSettings) -> Response:
    """Translate speech into English text (OpenAI `audio.translations.create`; Whisper's translate task)."""
    await run_in_threadpool(db.rollback)
    return await _speech_to_text(request, user, settings, "translate")
