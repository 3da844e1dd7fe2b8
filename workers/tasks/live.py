"""live.transcribe: a stretch of live speech (PCM16 mono, base64) → text, on the `live` queue.

Live sessions (app/live/) send the growing utterance for partial transcripts while the speaker talks, and a
dictation session (the FunASR protocol) sends each finished utterance for its final text with word times. The
live pool runs the asr pool's Whisper engine in processes of its own, so a long uploaded recording on the asr
queue never delays them. The caller's hotwords (ranked) come first, then the knowledge base's vocabulary in the
speech's language, bounded as for uploads. Partials skip language detection: a session names its language, or
the partial is transcribed without the vocabulary. `fit_window` (the API's `MEDVOICE_LIVE_ASR_FIT_WINDOW`) gives
Whisper's encoder the utterance plus a margin instead of a 30 s window (workers/engines/asr.py); `busy` (the
session saw the live pool behind) decodes a final once, without the fallback temperatures' retries.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from celery import Task

from workers import engines
from workers.celery_app import celery_app
from workers.core.errors import EmptyInput, InputError, InputTooLarge, MedvoiceError
from workers.core.settings import get_settings
from workers.engines.vocabulary import bounded, in_language, kb_terms
from workers.tasks.asr import check_options

log = logging.getLogger("medvoice.tasks.live")
MAX_HOTWORDS = 100


def pcm_audio(pcm: Any, sample_rate: Any, max_s: float) -> Any:
    """base64 PCM16 mono at 16 kHz → float32 samples; typed errors for anything else."""
    import numpy as np

    from workers.engines.asr import SAMPLE_RATE

    if sample_rate != SAMPLE_RATE:
        raise InputError(f"live audio must be {SAMPLE_RATE} Hz", {"field": "sample_rate"})
    if not isinstance(pcm, str):
        raise InputError("pcm must be base64 text", {"field": "pcm"})
    if len(pcm) * 3 // 4 > int(max_s * SAMPLE_RATE * 2) + 4:
        raise InputTooLarge(f"live audio longer than {max_s:.0f}s", {"max_s": max_s})
    try:
        raw = base64.b64decode(pcm, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("pcm is not valid base64", {"field": "pcm"}) from None
    if len(raw) % 2:
        raise InputError("PCM16 audio needs an even number of bytes", {"field": "pcm"})
    if not raw:
        raise EmptyInput("no audio", {"field": "pcm"})
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def merged_hotwords(ranked: Any, language: str | None) -> str | None:
    """The caller's hotwords (most important first), then the knowledge base's, bounded like an upload's."""
    s = get_settings()
    if ranked is not None and (not isinstance(ranked, list) or not all(isinstance(w, str) for w in ranked)):
        raise InputError("hotwords must be a list of words", {"field": "hotwords"})
    own = [w.strip() for w in (ranked or [])[:MAX_HOTWORDS] if w.strip()]
    kb = in_language(kb_terms(s), language) if s.asr_kb_vocabulary and language else []
    return bounded([*own, *(t for t in kb if t not in own)], s.asr_kb_vocabulary_chars, s.asr_hotwords)


@celery_app.task(name="live.transcribe", bind=True, throws=(MedvoiceError,))
def transcribe(
    self: Task,
    pcm: str,
    sample_rate: int = 16000,
    language: str | None = None,
    hotwords: list[str] | None = None,
    words: bool = False,
    partial: bool = False,
    fit_window: bool = False,
    busy: bool = False,
) -> dict[str, Any]:
    s = get_settings()
    check_options(language, None, None, words)
    audio = pcm_audio(pcm, sample_rate, s.live_max_utterance_s + 5)
    engine = engines.get("asr")
    # The session's VAD already cut the speech out; a fitted window is what a short utterance needs.
    options: dict[str, Any] = {"vad_filter": False, "fit_window": bool(fit_window), "bounded": True, "busy": bool(busy)}
    if words:
        options["word_timestamps"] = True
    if not language and not partial and s.asr_kb_vocabulary and kb_terms(s):
        # As for uploads: the vocabulary must be in the speech's script, so a final transcript settles the
        # language first (partials skip it: they are many and only a preview).
        language, _p = engine.detect_language(audio, fit_window=bool(fit_window))
    result = engine.transcribe(
        audio,
        language=language,
        hotwords=merged_hotwords(hotwords, language),
        beam_size=1 if partial else None,
        quick=partial,
        **options,
    )
    log.info(
        "live.transcribe task=%s %s audio=%.2fs in %.3fs",
        self.request.id,
        "partial" if partial else "final",
        result["duration_s"],
        result["timings"]["total_s"],
    )
    return result
