"""asr.transcribe: one audio file (a data-dir reference) → text, language, timed segments, timings.

Audio longer than settings.asr_split_above_s (a whole consultation) is cut at VAD silences into pieces of
at most asr_piece_max_s, written as WAVs under <audio_dir>/pieces/<key>/; the task then replaces itself with a
chord: a group of `asr.piece` tasks spread over the asr pool's processes, and `asr.join`, which puts the
pieces back in order with their timestamps shifted to the whole recording and answers with the task's own
id (so a caller waiting on asr.transcribe gets the joined result). Called in-process (no worker), the pieces
are transcribed one after another. The consultation pipeline uses the same pieces (workers/tasks/turns.py).
Unless the caller names hotwords, Whisper gets the knowledge base's vocabulary (workers/engines/vocabulary.py).

Options: `word_timestamps` (each word's times, on the whole recording's clock like the segments), `task`
("transcribe", or "translate": Whisper says it in English), and `stream_id`: each segment is appended to that
Redis stream (a `segment` event) as soon as it is decoded, for a caller that streams the transcript on; a
streamed recording is transcribed here, piece after piece in order, so its segments arrive in order.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from typing import Any

from celery import Task

from workers import engines
from workers.celery_app import celery_app
from workers.core import events
from workers.core.errors import InputError, MedvoiceError
from workers.core.event_schema import TranscriptSegment
from workers.core.refs import resolve_ref, to_ref
from workers.core.settings import get_settings
from workers.engines.vocabulary import hotwords as kb_hotwords
from workers.engines.vocabulary import kb_terms

log = logging.getLogger("medvoice.tasks.asr")
OnSegment = Callable[[dict[str, Any], str | None], None]  # a segment as it is decoded, and the audio's language


def check_options(
    language: Any, initial_prompt: Any, hotwords: Any, word_timestamps: Any = False, task: Any = "transcribe"
) -> None:
    from workers.engines.asr import TASKS

    if not isinstance(word_timestamps, bool):
        raise InputError("word_timestamps must be true or false", {"field": "word_timestamps"})
    if task not in TASKS:
        raise InputError("task must be 'transcribe' or 'translate'", {"field": "task"})
    if language is not None and (not isinstance(language, str) or not 2 <= len(language) <= 8):
        raise InputError("language must be a language code such as 'en' or 'zh'", {"field": "language"})
    for name, value in (("initial_prompt", initial_prompt), ("hotwords", hotwords)):
        if value is not None and (not isinstance(value, str) or len(value) > 1000):
            raise InputError(f"{name} must be a string of at most 1000 characters", {"field": name})


def start(
    audio_ref: str,
    key: str,
    language: str | None = None,
    initial_prompt: str | None = None,
    hotwords: str | None = None,
    word_timestamps: bool = False,
    task: str = "transcribe",
    on_segment: OnSegment | None = None,
) -> dict[str, Any]:
    """Decode once, then either transcribe here ({"result": ...}) or cut the audio into pieces
    ({"pieces": [piece kwargs...], "meta": ...}) for asr.piece tasks and a join."""
    import numpy as np
    import soundfile as sf

    from workers.engines.asr import SAMPLE_RATE

    s = get_settings()
    check_options(language, initial_prompt, hotwords, word_timestamps, task)
    engine = engines.get("asr")
    t0 = time.perf_counter()
    audio = engine.decode(resolve_ref(s, audio_ref, max_bytes=s.asr_max_bytes))
    decode_s = time.perf_counter() - t0
    duration = engine.check_audio(audio)
    language = language or s.asr_language
    language_probability = None
    long = duration > s.asr_split_above_s
    vocabulary = hotwords is None and s.asr_kb_vocabulary and bool(kb_terms(s))
    if not language and (long or vocabulary):
        # Settled first (one extra encoder pass over the first 30 s): the vocabulary must match the speech's
        # script, and short pieces detect language poorly (and could disagree), so a recording gets one.
        language, language_probability = engine.detect_language(audio)
    if vocabulary:
        hotwords = kb_hotwords(s, language)  # the knowledge base teaches the ear its drug and disease names
    n_hotwords = len(hotwords.split(", ")) if hotwords else 0  # how many are logged and recorded, never which
    options: dict[str, Any] = {"initial_prompt": initial_prompt, "hotwords": hotwords}
    if word_timestamps:
        options["word_timestamps"] = True
    if task != "transcribe":
        options["task"] = task
    if not long:
        result = engine.transcribe(audio, language=language, on_segment=on_segment, **options)
        result["timings"]["decode_s"] = round(decode_s, 4)
        result["timings"]["total_s"] = round(result["timings"]["total_s"] + decode_s, 4)
        if language_probability is not None:
            result["language_probability"] = language_probability
        result["timings"]["hotwords"] = n_hotwords
        return {"result": {**result, "audio_ref": audio_ref}}
    t1 = time.perf_counter()
    folder = s.audio_dir / "pieces" / key
    shutil.rmtree(folder, ignore_errors=True)  # a re-run stage starts clean
    folder.mkdir(parents=True, exist_ok=True)
    pieces = []
    for index, (a, b) in enumerate(engine.plan_pieces(audio, s.asr_piece_max_s)):
        path = folder / f"{index:04d}.wav"
        sf.write(str(path), np.clip(audio[a:b], -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
        pieces.append(
            {
                "audio_ref": to_ref(s, path),
                "index": index,
                "offset_s": round(a / SAMPLE_RATE, 3),
                "language": language,
                **options,
            }
        )
    meta = {
        "audio_ref": audio_ref,
        "folder": to_ref(s, folder) if pieces else None,
        "duration_s": round(duration, 3),
        "language": language,
        "language_probability": language_probability,
        "decode_s": round(decode_s, 4),
        "split_s": round(time.perf_counter() - t1, 4),
        "started": time.time(),
        "hotwords": n_hotwords,
        "task": task,
    }
    log.info("asr audio=%s %.1fs cut into %d pieces", key, duration, len(pieces))
    return {"pieces": pieces, "meta": meta}


def transcribe_piece(
    audio_ref: str,
    index: int,
    offset_s: float,
    language: str | None = None,
    initial_prompt: str | None = None,
    hotwords: str | None = None,
    word_timestamps: bool = False,
    task: str = "transcribe",
    on_segment: OnSegment | None = None,
) -> dict[str, Any]:
    """One piece of a long recording; its segments' (and words') times are shifted to the whole recording's."""
    s = get_settings()
    check_options(language, initial_prompt, hotwords, word_timestamps, task)
    if not isinstance(index, int) or not isinstance(offset_s, (int, float)) or index < 0 or offset_s < 0:
        raise InputError("a piece needs a non-negative index and offset_s", {"field": "piece"})

    def shifted(seg: dict[str, Any], language: str | None) -> None:
        # Shifted once, as it is decoded: the result's segments are these same dicts.
        seg["start"], seg["end"] = round(seg["start"] + offset_s, 3), round(seg["end"] + offset_s, 3)
        for w in seg.get("words") or []:
            w["start"], w["end"] = round(w["start"] + offset_s, 3), round(w["end"] + offset_s, 3)
        if on_segment is not None:
            on_segment(seg, language)

    result = engines.get("asr").transcribe(
        resolve_ref(s, audio_ref, max_bytes=s.asr_max_bytes),
        language=language,
        initial_prompt=initial_prompt,
        hotwords=hotwords,
        word_timestamps=word_timestamps,
        task=task,
        on_segment=shifted,
    )
    return {**result, "index": index, "offset_s": offset_s, "worker": f"{socket.gethostname()}:{os.getpid()}"}


def join_pieces(pieces: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The pieces, in order, as one transcription result (the shape asr.transcribe returns)."""
    from workers.engines.asr import separator

    s = get_settings()
    pieces = sorted(pieces, key=lambda p: p["index"])
    language = meta.get("language") or (max(pieces, key=lambda p: p["duration_s"])["language"] if pieces else None)
    sep = separator(language, meta.get("task") or "transcribe")
    segments = [seg for p in pieces for seg in p["segments"]]
    transcribe_s = sum(p["timings"]["transcribe_s"] for p in pieces)
    duration = float(meta["duration_s"])
    total = time.time() - float(meta["started"]) + float(meta["decode_s"])
    if meta.get("folder"):
        shutil.rmtree(s.data_dir / meta["folder"], ignore_errors=True)
    out = {
        "text": sep.join(p["text"] for p in pieces if p["text"]).strip(),
        "language": language,
        "language_probability": meta.get("language_probability"),
        "duration_s": duration,
        "segments": segments,
        "audio_ref": meta["audio_ref"],
        "timings": {
            "decode_s": meta["decode_s"],
            "split_s": meta["split_s"],
            "transcribe_s": round(transcribe_s, 4),
            "total_s": round(total, 4),
            "rtf": round(total / duration, 4),
            "pieces": len(pieces),
            "workers": len({p.get("worker") for p in pieces}),
            "hotwords": meta.get("hotwords", 0),
        },
    }
    if any("words" in p for p in pieces):
        out["words"] = [w for p in pieces for w in p.get("words") or []]
    return out


def transcribe_here(out: dict[str, Any], on_segment: OnSegment | None = None) -> dict[str, Any]:
    """What start() returned, finished in this process: its own result, or its pieces one after another
    (with `on_segment`, each piece's segments as they are decoded, on the whole recording's clock)."""
    if "result" in out:
        return out["result"]
    return join_pieces([transcribe_piece(**p, on_segment=on_segment) for p in out["pieces"]], out["meta"])


def pieces_chord(piece_task: str, pieces: list[dict[str, Any]], join_task: str, join_arg: dict[str, Any]):  # noqa: ANN201
    """The canvas a long recording's task replaces itself with: pieces in parallel, then one join."""
    from celery import chord, group

    return chord(
        group(celery_app.signature(piece_task, args=(p,)) for p in pieces),
        celery_app.signature(join_task, args=(join_arg,)),
    )


@celery_app.task(name="asr.transcribe", bind=True, throws=(MedvoiceError,))
def transcribe(
    self: Task,
    audio_ref: str,
    language: str | None = None,
    initial_prompt: str | None = None,
    hotwords: str | None = None,
    turn_id: str | None = None,
    word_timestamps: bool = False,
    task: str = "transcribe",
    stream_id: str | None = None,
) -> dict[str, Any]:
    on_segment = _streamer(events.check_turn_id(stream_id)) if stream_id is not None else None
    out = start(
        audio_ref,
        key=self.request.id or f"local-{os.getpid()}-{time.time_ns()}",
        language=language,
        initial_prompt=initial_prompt,
        hotwords=hotwords,
        word_timestamps=word_timestamps,
        task=task,
        on_segment=on_segment,
    )
    if on_segment is not None:
        result = transcribe_here(out, on_segment)
    elif "result" in out or self.request.called_directly or not out["pieces"]:
        result = transcribe_here(out)
    else:
        raise self.replace(pieces_chord("asr.piece", out["pieces"], "asr.join", out["meta"]))
    log.info(
        "asr.transcribe task=%s turn=%s audio=%.2fs lang=%s rtf=%.3f",
        self.request.id,
        turn_id,
        result["duration_s"],
        result["language"],
        result["timings"]["rtf"],
    )
    return result


def _streamer(stream_id: str) -> OnSegment:
    """on_segment for a streamed transcription: each segment onto the caller's stream, in order."""
    r = events.client()
    count = [0]

    def emit(seg: dict[str, Any], language: str | None) -> None:
        events.emit(
            stream_id,
            TranscriptSegment(index=count[0], start=seg["start"], end=seg["end"], text=seg["text"], language=language),
            r=r,
        )
        count[0] += 1

    return emit


@celery_app.task(name="asr.piece", bind=True, throws=(MedvoiceError,))
def piece(self: Task, spec: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise InputError("asr.piece takes {audio_ref, index, offset_s, ...}", {"field": "spec"})
    out = transcribe_piece(**spec)
    log.info(
        "asr.piece task=%s index=%d audio=%.2fs rtf=%.3f",
        self.request.id,
        out["index"],
        out["duration_s"],
        out["timings"]["rtf"],
    )
    return out


@celery_app.task(name="asr.join", bind=True, throws=(MedvoiceError,))
def join(self: Task, pieces: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    result = join_pieces(pieces, meta)
    log.info(
        "asr.join task=%s audio=%.2fs pieces=%d workers=%d rtf=%.3f",
        self.request.id,
        result["duration_s"],
        result["timings"]["pieces"],
        result["timings"]["workers"],
        result["timings"]["rtf"],
    )
    return result
