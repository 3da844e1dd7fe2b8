"""asr.transcribe: one audio file (a data-dir reference) → text, language, timed segments, timings."""

from __future__ import annotations

import logging
from typing import Any

from workers import engines
from workers.celery_app import celery_app
from workers.engines import asr as _asr_engine  # noqa: F401 - registers the "asr" engine loader
from workers.engines.refs import resolve_ref
from workers.errors import InputError, MedvoiceError
from workers.settings import get_settings

log = logging.getLogger("medvoice.tasks.asr")


@celery_app.task(name="asr.transcribe", bind=True, throws=(MedvoiceError,))
def transcribe(self, audio_ref: str, language: str | None = None, initial_prompt: str | None = None,  # noqa: ANN001
               hotwords: str | None = None, turn_id: str | None = None) -> dict[str, Any]:
    s = get_settings()
    if language is not None and (not isinstance(language, str) or not 2 <= len(language) <= 8):
        raise InputError("language must be a language code such as 'en' or 'zh'", {"field": "language"})
    for name, value in (("initial_prompt", initial_prompt), ("hotwords", hotwords)):
        if value is not None and (not isinstance(value, str) or len(value) > 1000):
            raise InputError(f"{name} must be a string of at most 1000 characters", {"field": name})
    path = resolve_ref(s, audio_ref, max_bytes=s.asr_max_bytes)
    result = engines.get("asr").transcribe(path, language=language, initial_prompt=initial_prompt,
                                           hotwords=hotwords)
    result["audio_ref"] = audio_ref
    log.info("asr.transcribe task=%s turn=%s audio=%.2fs lang=%s rtf=%.3f", self.request.id, turn_id,
             result["duration_s"], result["language"], result["timings"]["rtf"])
    return result
