"""OpenAI-compatible audio routes: speech to text and text to speech, for the official `openai` clients.

POST /v1/audio/transcriptions   multipart `file`, `model`, optional `language`, `prompt`, `response_format`
                                (json | text | srt | vtt | verbose_json), `temperature` → the transcript
POST /v1/audio/speech           JSON {model, input, voice, response_format (wav | pcm), speed} → audio bytes

The bearer key is one of our own JWTs (POST /v1/auth/token), checked by the same `CurrentUser` dependency
as every other route. The upload is checked exactly like a consultation upload (app/audio.py: extension,
size, decode, duration, empty) before it is stored under <audio_dir>/openai/<id>.<ext>; `asr.transcribe`
is sent to the asr pool by task name (app/task_client.py) and awaited in a threadpool; the stored file is
deleted afterwards whatever happened (this route keeps no audio). Synthesis sends `tts.synthesize` by name,
reads the WAV it wrote and deletes it.

Choices (see README, "OpenAI-compatible audio"):
- `model`: "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe" or "medvoice-asr" all name the one
  configured ASR model; "tts-1", "tts-1-hd", "gpt-4o-mini-tts" or "medvoice-tts" the configured voice.
  Any other name is a 400 `model_not_found`.
- `voice`: every OpenAI voice name (alloy, ash, ..., cedar) and "default" speak with the configured voice.
- verbose_json `language` is Whisper's full lower-case name ("english", "chinese"), as OpenAI's whisper-1
  returns it; `language` in the request takes a code ("en") or that name.
- Speech defaults to "wav" (OpenAI's default is mp3, which is not offered); "pcm" is raw 16-bit
  little-endian mono at 24 kHz, as OpenAI defines it. `speed` omitted → MEDVOICE_TTS_SPEED.
- `temperature` is validated (0..1) and ignored; word timestamps and streaming are refused with a 400.

Errors on this router have OpenAI's shape `{"error": {"message", "type", "param", "code"}}`. Bad audio keeps
the statuses of the consultation upload (413 too big/long, 415 unsupported extension, 422 corrupt/empty),
bad parameters are 400, a missing/invalid key 401; worker errors keep their typed status; an unknown worker
failure is 502, a timeout 504, no broker 503. No transcript or input text is logged or audited.
"""

from __future__ import annotations

import io
import logging
import time
import zlib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from app import task_client
from app.audio import extension_of, validate_audio
from app.audit import audit
from app.deps import AppSettings, CurrentUser, DbSession
from app.uploads import MULTIPART_OVERHEAD, body_limited, read_upload, store_upload
from workers.core.errors import InputTooLarge, MedvoiceError, WorkerFailed
from workers.core.records import User, new_id
from workers.core.refs import resolve_ref, to_ref
from workers.core.settings import Settings

log = logging.getLogger("medvoice.api.openai")

TRANSCRIPTION_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "medvoice-asr")
SPEECH_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "medvoice-tts")
VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
    "default",
)
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
SPEECH_FORMATS = ("wav", "pcm")
PCM_RATE = 24000  # OpenAI's "pcm": 24 kHz, 16-bit signed little-endian, mono, no header
MAX_PROMPT_CHARS = 1000  # what asr.transcribe accepts as initial_prompt

# Whisper's language codes and the names OpenAI's verbose_json reports (whisper/tokenizer.py).
LANGUAGES = {
    "en": "english",
    "zh": "chinese",
    "de": "german",
    "es": "spanish",
    "ru": "russian",
    "ko": "korean",
    "fr": "french",
    "ja": "japanese",
    "pt": "portuguese",
    "tr": "turkish",
    "pl": "polish",
    "ca": "catalan",
    "nl": "dutch",
    "ar": "arabic",
    "sv": "swedish",
    "it": "italian",
    "id": "indonesian",
    "hi": "hindi",
    "fi": "finnish",
    "vi": "vietnamese",
    "he": "hebrew",
    "uk": "ukrainian",
    "el": "greek",
    "ms": "malay",
    "cs": "czech",
    "ro": "romanian",
    "da": "danish",
    "hu": "hungarian",
    "ta": "tamil",
    "no": "norwegian",
    "th": "thai",
    "ur": "urdu",
    "hr": "croatian",
    "bg": "bulgarian",
    "lt": "lithuanian",
    "la": "latin",
    "mi": "maori",
    "ml": "malayalam",
    "cy": "welsh",
    "sk": "slovak",
    "te": "telugu",
    "fa": "persian",
    "lv": "latvian",
    "bn": "bengali",
    "sr": "serbian",
    "az": "azerbaijani",
    "sl": "slovenian",
    "kn": "kannada",
    "et": "estonian",
    "mk": "macedonian",
    "br": "breton",
    "eu": "basque",
    "is": "icelandic",
    "hy": "armenian",
    "ne": "nepali",
    "mn": "mongolian",
    "bs": "bosnian",
    "kk": "kazakh",
    "sq": "albanian",
    "sw": "swahili",
    "gl": "galician",
    "mr": "marathi",
    "pa": "punjabi",
    "si": "sinhala",
    "km": "khmer",
    "sn": "shona",
    "yo": "yoruba",
    "so": "somali",
    "af": "afrikaans",
    "oc": "occitan",
    "ka": "georgian",
    "be": "belarusian",
    "tg": "tajik",
    "sd": "sindhi",
    "gu": "gujarati",
    "am": "amharic",
    "yi": "yiddish",
    "lo": "lao",
    "uz": "uzbek",
    "fo": "faroese",
    "ht": "haitian creole",
    "ps": "pashto",
    "tk": "turkmen",
    "nn": "nynorsk",
    "mt": "maltese",
    "sa": "sanskrit",
    "lb": "luxembourgish",
    "my": "myanmar",
    "bo": "tibetan",
    "tl": "tagalog",
    "mg": "malagasy",
    "as": "assamese",
    "tt": "tatar",
    "haw": "hawaiian",
    "ln": "lingala",
    "ha": "hausa",
    "ba": "bashkir",
    "jw": "javanese",
    "su": "sundanese",
    "yue": "cantonese",
}
LANGUAGE_CODES = {name: code for code, name in LANGUAGES.items()}


# ---- OpenAI-style errors ----------------------------------------------------------------------------------
class OpenAIError(Exception):
    """An error this router answers as {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self, status_code: int, message: str, code: str, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code, self.message, self.code, self.param = status_code, message, code, param
        self.headers = headers

    @classmethod
    def from_typed(cls, exc: MedvoiceError, param: str | None = None) -> OpenAIError:
        field = exc.details.get("field") if isinstance(exc.details, dict) else None
        return cls(exc.http_status, str(exc), exc.code, param=field if isinstance(field, str) else param)

    def response(self) -> JSONResponse:
        kind = (
            "authentication_error"
            if self.status_code == 401
            else "permission_error"
            if self.status_code == 403
            else "invalid_request_error"
            if self.status_code < 500
            else "server_error"
        )
        return JSONResponse(
            {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}},
            status_code=self.status_code,
            headers=self.headers,
        )


def bad_request(message: str, param: str, code: str = "invalid_value") -> OpenAIError:
    return OpenAIError(status.HTTP_400_BAD_REQUEST, message, code, param=param)


_HTTP_CODES = {
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    413: "input_too_large",
    415: "unsupported_media_type",
}


class OpenAIRoute(APIRoute):
    """Every error raised while handling a route of this router — the auth dependency's HTTPException,
    a request-validation error, a typed MedvoiceError — leaves in OpenAI's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError as exc:
                return exc.response()
            except MedvoiceError as exc:
                return OpenAIError.from_typed(exc).response()
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                loc = [str(p) for p in first.get("loc", ()) if p != "body"]
                message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid request')}"
                return bad_request(message, ".".join(loc) or "body").response()
            except HTTPException as exc:
                detail = exc.detail
                message = detail.get("message", str(detail)) if isinstance(detail, dict) else str(detail)
                code = (detail.get("code") if isinstance(detail, dict) else None) or _HTTP_CODES.get(
                    exc.status_code, "http_" + str(exc.status_code)
                )
                return OpenAIError(exc.status_code, message, code, headers=exc.headers).response()

        return handle


router = APIRouter(prefix="/v1/audio", tags=["openai-compatible"], route_class=OpenAIRoute)


# ---- the worker round trip --------------------------------------------------------------------------------
# app/task_client.py sends the task and maps what goes wrong to a typed error (503 broker_unavailable,
# 504 worker_timeout, 502 worker_failed, or the task's own); OpenAIRoute answers it in OpenAI's shape.
def task_timeout(settings: Settings) -> float:
    """How long a route waits for its task: the task's own hard time limit (a queued task expires then too)."""
    return float(settings.task_time_limit_s)


def _audit(db: Session, user: User, action: str, record_id: str, detail: dict[str, Any]) -> None:
    audit(db, user, action, "openai_audio", record_id, **detail)
    db.commit()


# ---- transcriptions -------------------------------------------------------------------------------------
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


def _options(form: Any) -> dict[str, Any]:
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
    if (_field(form, "stream") or "false").lower() not in ("false", "0", ""):
        raise bad_request("streaming transcription is not supported; omit 'stream'", "stream")
    granularities = [g for key in ("timestamp_granularities[]", "timestamp_granularities") for g in form.getlist(key)]
    for g in granularities:
        if g not in ("segment", "word"):
            raise bad_request(f"unknown timestamp granularity '{g}'", "timestamp_granularities")
        if g == "word":
            raise bad_request(
                "word timestamps are not supported; segment timestamps come with verbose_json",
                "timestamp_granularities",
            )
    return {
        "model": model,
        "response_format": response_format,
        "prompt": prompt,
        "language": _language(_field(form, "language")),
    }


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


def to_verbose(result: dict[str, Any]) -> dict[str, Any]:
    code = result.get("language") or ""
    segments = [
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
    return {
        "task": "transcribe",
        "language": LANGUAGES.get(code, code),
        "duration": result["duration_s"],
        "text": result["text"],
        "segments": segments,
        "usage": {"type": "duration", "seconds": result["duration_s"]},
    }


def render(result: dict[str, Any], response_format: str) -> Response:
    if response_format == "json":
        return JSONResponse({"text": result["text"]})
    if response_format == "verbose_json":
        return JSONResponse(to_verbose(result))
    if response_format == "text":
        return PlainTextResponse(result["text"] + "\n")
    if response_format == "srt":
        return PlainTextResponse(to_srt(result.get("segments") or []), media_type="application/x-subrip")
    return PlainTextResponse(to_vtt(result.get("segments") or []), media_type="text/vtt")


_TRANSCRIPTION_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "model"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {"type": "string", "enum": list(TRANSCRIPTION_MODELS)},
                        "language": {
                            "type": "string",
                            "description": "ISO-639-1 code, e.g. en or zh; detected when omitted",
                        },
                        "prompt": {"type": "string", "maxLength": MAX_PROMPT_CHARS},
                        "response_format": {"type": "string", "enum": list(TRANSCRIPTION_FORMATS), "default": "json"},
                        "temperature": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": 1,
                            "description": "accepted, ignored",
                        },
                    },
                }
            }
        },
    },
}


@router.post("/transcriptions", openapi_extra=_TRANSCRIPTION_BODY)
async def create_transcription(request: Request, user: CurrentUser, db: DbSession, settings: AppSettings) -> Response:
    """Transcribe an audio file (OpenAI `audio.transcriptions.create`)."""
    await run_in_threadpool(db.rollback)  # hold no read transaction while the upload is read and transcribed
    call_id = new_id()
    started = time.perf_counter()
    detail: dict[str, Any] = {}
    path: Path | None = None
    try:
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
            options = _options(form)
            detail.update(model=options["model"], response_format=options["response_format"])
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
        path = await run_in_threadpool(
            store_upload, settings.audio_dir / "openai" / f"{call_id}.{info.extension}", data
        )
        del data
        result = await task_client.call_async(
            "asr.transcribe",
            {"audio_ref": to_ref(settings, path), "language": options["language"], "initial_prompt": options["prompt"]},
            timeout_s=task_timeout(settings),
        )
        detail.update(language=result.get("language"), segments=len(result.get("segments") or []))
        response = render(result, options["response_format"])
        detail["status"] = 200
        return response
    except (OpenAIError, MedvoiceError) as exc:
        detail.update(_failure(exc))
        raise
    finally:
        if path is not None:
            path.unlink(missing_ok=True)  # this route keeps no audio
        detail["took_ms"] = round((time.perf_counter() - started) * 1000, 1)
        log.info(
            "openai transcription=%s user=%s status=%s error=%s audio=%ss lang=%s format=%s took=%sms",
            call_id,
            user.id,
            detail.get("status", 500),
            detail.get("error"),
            detail.get("audio_s"),
            detail.get("language"),
            detail.get("response_format"),
            detail["took_ms"],
        )
        await run_in_threadpool(_audit, db, user, "openai.transcription", call_id, detail)


def _too_large(settings: Settings) -> MedvoiceError:
    return InputTooLarge(
        f"audio larger than the limit of {settings.consult_max_audio_bytes} bytes",
        {"max_bytes": settings.consult_max_audio_bytes, "field": "file"},
    )


# ---- speech ---------------------------------------------------------------------------------------------
class SpeechIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str
    voice: str = "default"
    response_format: str = "wav"
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    instructions: str | None = None  # accepted, ignored: the configured voice has no style prompt


def _check_speech(body: SpeechIn, settings: Settings) -> None:
    if body.model not in SPEECH_MODELS:
        raise bad_request(
            f"unknown model '{body.model}'; this server speaks with: " + ", ".join(SPEECH_MODELS),
            "model",
            "model_not_found",
        )
    if body.voice.lower() not in VOICES:
        raise bad_request(
            f"unknown voice '{body.voice}'; use one of: "
            + ", ".join(VOICES)
            + " (all speak with the configured voice)",
            "voice",
        )
    if body.response_format not in SPEECH_FORMATS:
        raise bad_request(
            f"unsupported response_format '{body.response_format}'; this server returns "
            "'wav' (16-bit PCM WAV) or 'pcm' (raw 16-bit 24 kHz mono)",
            "response_format",
        )
    if not body.input.strip():
        raise bad_request("'input' is empty", "input", "empty_input")
    if len(body.input) > settings.tts_max_chars:
        raise bad_request(f"'input' longer than {settings.tts_max_chars} characters", "input", "input_too_large")


def wav_to_pcm(data: bytes, rate: int = PCM_RATE) -> bytes:
    """A WAV file → raw 16-bit little-endian mono samples at `rate` (PyAV's resampler)."""
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    out = bytearray()
    with av.open(io.BytesIO(data), mode="r", format="wav") as container:
        for frame in container.decode(audio=0):
            for resampled in resampler.resample(frame):
                out += resampled.to_ndarray().tobytes()
        for resampled in resampler.resample(None):
            out += resampled.to_ndarray().tobytes()
    return bytes(out)


def _failure(exc: OpenAIError | MedvoiceError) -> dict[str, Any]:
    """A failed call's status and error code, for its log line and audit record."""
    if isinstance(exc, OpenAIError):
        return {"status": exc.status_code, "error": exc.code}
    return {"status": exc.http_status, "error": exc.code}


def _read_and_delete(settings: Settings, ref: str) -> bytes:
    path = resolve_ref(settings, ref)
    try:
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


@router.post(
    "/speech",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}, "audio/pcm": {}}, "description": "the speech"}},
)
async def create_speech(body: SpeechIn, user: CurrentUser, db: DbSession, settings: AppSettings) -> Response:
    """Synthesize speech (OpenAI `audio.speech.create`) with the configured voice."""
    await run_in_threadpool(db.rollback)
    call_id = new_id()
    started = time.perf_counter()
    detail: dict[str, Any] = {
        "model": body.model,
        "voice": body.voice,
        "response_format": body.response_format,
        "chars": len(body.input),
    }
    try:
        _check_speech(body, settings)
        out = await task_client.call_async(
            "tts.synthesize", {"text": body.input, "speed": body.speed}, timeout_s=task_timeout(settings)
        )
        if not out.get("audio_ref"):
            raise WorkerFailed("the tts worker returned no audio", {"task": "tts.synthesize", "pool": "tts"})
        wav = await run_in_threadpool(_read_and_delete, settings, out["audio_ref"])
        detail.update(status=200, audio_s=out.get("duration_s"))
        if body.response_format == "pcm":
            return Response(await run_in_threadpool(wav_to_pcm, wav), media_type="audio/pcm")
        return Response(wav, media_type="audio/wav")
    except (OpenAIError, MedvoiceError) as exc:
        detail.update(_failure(exc))
        raise
    finally:
        detail["took_ms"] = round((time.perf_counter() - started) * 1000, 1)
        log.info(
            "openai speech=%s user=%s status=%s error=%s chars=%d audio=%ss took=%sms",
            call_id,
            user.id,
            detail.get("status", 500),
            detail.get("error"),
            detail["chars"],
            detail.get("audio_s"),
            detail["took_ms"],
        )
        await run_in_threadpool(_audit, db, user, "openai.speech", call_id, detail)
