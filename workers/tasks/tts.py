"""tts.synthesize: one sentence → a 16-bit PCM WAV under the data dir; returns its reference. tts.voices: the
voices this pool speaks with.

Input: {text, turn_id?, index?, speed?, voice?, language?}. `voice` is a voice id (unknown: UnknownVoice, 400);
without it `language` (given, or detected from the text) picks that language's default voice (none:
NoVoiceForLanguage, 422). The clip is written at settings.tts_output_rate to
<data_dir>/audio/tts/<turn_id>/<index>-<tag>.wav (ad-hoc calls: audio/tts/adhoc/<task id>.wav) and, for a
turn, announced on its stream as {type: "audio", index, audio_ref, duration_s, sample_rate}. A cancelled
turn's queued sentences are dropped: the task returns {cancelled: true, audio_ref: null} without synthesising.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from celery import Task

from workers import engines
from workers.celery_app import celery_app
from workers.core import events
from workers.core.errors import EmptyInput, InputError, InputTooLarge, MedvoiceError
from workers.core.event_schema import Audio
from workers.core.refs import to_ref
from workers.core.settings import get_settings

log = logging.getLogger("medvoice.tasks.tts")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@celery_app.task(name="tts.synthesize", bind=True, throws=(MedvoiceError,))
def synthesize(
    self: Task,
    text: str,
    turn_id: str | None = None,
    index: int | None = None,
    speed: float | None = None,
    voice: str | None = None,
    language: str | None = None,
) -> dict[str, Any]:
    out = synthesize_clip(
        text, turn_id=turn_id, index=index, speed=speed, tag=self.request.id, voice=voice, language=language
    )
    if not out["cancelled"]:
        log.info(
            "tts.synthesize task=%s turn=%s index=%s voice=%s audio=%.2fs rtf=%s",
            self.request.id,
            turn_id,
            index,
            out["voice"],
            out["timings"]["audio_s"],
            out["timings"]["rtf"],
        )
    else:
        log.info("tts.synthesize task=%s turn=%s index=%s dropped: turn cancelled", self.request.id, turn_id, index)
    return out


@celery_app.task(name="tts.voices", throws=(MedvoiceError,))
def voices() -> list[dict[str, Any]]:
    """[{id, language, backend, sample_rate, license, default}] for every voice this pool can speak with."""
    return engines.get("tts").list_voices()


def synthesize_clip(
    text: str,
    turn_id: str | None = None,
    index: int | None = None,
    speed: float | None = None,
    tag: str | None = None,
    voice: str | None = None,
    language: str | None = None,
) -> dict[str, Any]:
    """Speak one sentence with this process's engine into its own WAV; `tag` names the file (a fresh one
    when None). For a turn, the clip is announced on its stream."""
    s = get_settings()
    if not isinstance(text, str):
        raise InputError("text must be a string", {"field": "text"})
    if not text.strip():
        raise EmptyInput("text is empty", {"field": "text"})
    if len(text) > s.tts_max_chars:
        raise InputTooLarge(f"text longer than {s.tts_max_chars} characters", {"max_chars": s.tts_max_chars})
    if index is not None and (not isinstance(index, int) or index < 0):
        raise InputError("index must be a non-negative integer", {"field": "index"})
    if speed is not None and (not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4):
        raise InputError("speed must be between 0.25 and 4", {"field": "speed"})
    for field, value in (("voice", voice), ("language", language)):
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > 64):
            raise InputError(f"{field} must be a short non-empty string", {"field": field})
    if turn_id is not None:
        turn_id = events.check_turn_id(turn_id)
        if events.is_cancelled(turn_id):
            return {"turn_id": turn_id, "index": index, "cancelled": True, "audio_ref": None}
    engine = engines.get("tts")
    speech = engine.speak(text, speed=speed, voice=voice, language=language)
    wav, timings = speech.wav, speech.timings
    folder = _SAFE.sub("_", turn_id) if turn_id else "adhoc"
    # Each synthesis gets its own file (the task id, or a fresh one when called in-process): a late clip from
    # a re-delivered LLM stage, or one started just as tts.turn revoked it, cannot overwrite the clip taken.
    tag = _SAFE.sub("_", tag or uuid.uuid4().hex)
    name = f"{index:04d}-{tag[:12]}.wav" if index is not None and turn_id else f"{tag}.wav"
    path = s.audio_dir / "tts" / folder / name
    engine.write_wav(wav, path)
    ref = to_ref(s, path)
    out = {
        "turn_id": turn_id,
        "index": index,
        "cancelled": False,
        "audio_ref": ref,
        "backend": speech.backend,
        "voice": speech.voice,
        "language": speech.language,
        "sample_rate": engine.sample_rate,
        "duration_s": timings["audio_s"],
        "timings": timings,
    }
    if turn_id is not None:
        events.emit(
            turn_id, Audio(index=index, audio_ref=ref, duration_s=timings["audio_s"], sample_rate=engine.sample_rate)
        )
    return out
