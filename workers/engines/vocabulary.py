"""The hotwords the asr pool gives Whisper: MEDVOICE_ASR_HOTWORDS plus the knowledge base's own vocabulary
(knowledge/vocabulary.py, written by the rag pool beside the store), most important terms first, bounded
by asr_kb_vocabulary_chars. Re-read only when the file changes."""

from __future__ import annotations

import threading

from knowledge import vocabulary
from knowledge.text import is_cjk
from workers.core.settings import Settings

_lock = threading.Lock()
_cache: dict[str, tuple[float, list[str]]] = {}


def kb_terms(settings: Settings) -> list[str]:
    from workers.engines.rag import kb_config

    folder = kb_config(settings).path
    try:
        mtime = (folder / vocabulary.FILE_NAME).stat().st_mtime
    except OSError:
        return []
    key = str(folder)
    with _lock:
        cached = _cache.get(key)
        if cached is None or cached[0] != mtime:
            cached = _cache[key] = (mtime, vocabulary.read(folder))
    return cached[1]


def bounded(terms: list[str], chars: int, fixed: str | None = None) -> str | None:
    """`fixed`, then ranked terms while they fit in `chars`, comma-separated; None when empty."""
    parts = [fixed.strip()] if fixed and fixed.strip() else []
    room = chars
    for term in terms:
        if len(term) + 2 > room:
            break  # ranked: what does not fit is the least important
        parts.append(term)
        room -= len(term) + 2
    return ", ".join(parts) or None


def in_language(terms: list[str], language: str | None) -> list[str]:
    """The terms written in the audio's script: English terms in the prompt of Chinese speech pull Whisper
    towards English and raise its character error rate (bench/asr_vocabulary.py measured 0.16 → 0.42)."""
    from workers.engines.asr import WIDE_LANGUAGES  # with numpy: not for a worker's parent, which imports this

    wide = (language or "") in WIDE_LANGUAGES
    return [t for t in terms if any(is_cjk(ch) for ch in t) == wide]


def hotwords(settings: Settings, language: str | None) -> str | None:
    """`asr_hotwords`, then the KB terms in the audio's language while they fit in asr_kb_vocabulary_chars."""
    terms = in_language(kb_terms(settings), language) if settings.asr_kb_vocabulary else []
    return bounded(terms, settings.asr_kb_vocabulary_chars, settings.asr_hotwords)
