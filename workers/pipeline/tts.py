"""tts: the answer's sentence clips → the joined reply WAV on the record, `audio_ready`, then `done`.

The clips were started on the tts pool as the LLM produced each sentence (llm.speak_early); this stage takes
them, speaking here only a sentence whose clip is still queued (revoked, so it is not spoken twice), failed,
or did not finish within consult_stream_tts_wait_s. Each sentence is spoken by the voice of its language;
a sentence in a language no voice here speaks stays text (a `text_only` event, its index in the stage's
timings), and the reply joins the others. Every clip has the pool's one output rate.
"""

from __future__ import annotations

import logging
from datetime import UTC

from knowledge.files import atomic_path
from workers.celery_app import celery_app
from workers.core import events
from workers.core.db import session_scope
from workers.core.errors import EmptyInput, EngineFailure, InputError, NoVoiceForLanguage, TurnCancelled
from workers.core.event_schema import Audio, AudioReady, Done, TextOnly, Timings
from workers.core.records import Turn, TurnStatus, utcnow
from workers.core.refs import to_ref
from workers.core.settings import get_settings
from workers.pipeline.contracts import Answered, Spoken, State
from workers.pipeline.stage import Context, db_url
from workers.tasks import tts as tts_tasks

log = logging.getLogger("medvoice.tasks.turns")


def speak(_turn: Turn, answered: Answered, ctx: Context) -> Spoken:
    import numpy as np
    import soundfile as sf

    s = get_settings()
    turn_id = answered.turn_id
    clips: list[str] = []
    text_only: list[int] = []
    taken = 0
    for index, sentence in enumerate(answered.sentences):
        early = answered.clips[index] if index < len(answered.clips) else None
        out = early_clip(early, s.consult_stream_tts_wait_s)
        if out is not None and out.get("no_voice"):
            out = None  # its early clip found no voice: say so once, below, from this stage
        if out is not None:
            taken += 1
            if ctx.rerun and out.get("audio_ref"):  # clients dropped the earlier `audio` events at `restart`
                events.emit(
                    turn_id,
                    Audio(
                        index=index,
                        audio_ref=out["audio_ref"],
                        duration_s=out.get("duration_s"),
                        sample_rate=out.get("sample_rate"),
                    ),
                )
        else:
            try:
                out = tts_tasks.synthesize_clip(sentence, turn_id=turn_id, index=index)
            except EmptyInput:
                continue  # nothing speakable (a lone citation marker): no clip
            except NoVoiceForLanguage as exc:
                text_only.append(index)
                language = exc.details.get("language")
                events.emit(turn_id, TextOnly(index=index, language=language, message=exc.message))
                log.info("turn=%s sentence %d stays text: no voice for %s", turn_id, index, language)
                continue
        if out.get("cancelled"):
            raise TurnCancelled("the turn was cancelled before its reply was spoken", {"turn_id": turn_id})
        if out.get("audio_ref"):
            clips.append(out["audio_ref"])
    reply_ref = None
    duration = 0.0
    if clips:
        parts = []
        rate = None
        for ref in clips:
            wav, sr = sf.read(str(s.data_dir / ref), dtype="int16", always_2d=False)
            if rate is not None and sr != rate:
                raise EngineFailure("TTS clips differ in sample rate", {"rates": [rate, sr]})
            rate = sr
            if parts:
                parts.append(np.zeros(int(rate * s.consult_reply_gap_s), dtype=np.int16))
            parts.append(wav)
        joined = np.concatenate(parts)
        path = s.audio_dir / "tts" / turn_id / "reply.wav"
        with atomic_path(path, suffix=".tmp.wav") as tmp:  # atomic: a retried stage replaces, never half-writes
            sf.write(str(tmp), joined, rate, subtype="PCM_16", format="WAV")
        reply_ref = to_ref(s, path)
        duration = round(joined.shape[0] / rate, 3)
    timing = {"total_s": ctx.elapsed(), "clips": len(clips), "streamed_clips": taken, "audio_s": duration}
    if text_only:
        timing["text_only"] = text_only
    timings = _finish(turn_id, reply_ref, timing)
    if reply_ref:
        events.emit(turn_id, AudioReady(audio_ref=reply_ref, duration_s=duration))
    events.emit(turn_id, Done(status="done", timings=timings))
    log.info("turn=%s done: %d clips, %.2fs of reply audio", turn_id, len(clips), duration)
    return Spoken(turn_id, reply_ref)


def _finish(turn_id: str, reply_ref: str | None, timing: Timings) -> Timings:
    """The reply on the record, the stage totals and the wall time since the turn was created; status done."""
    with session_scope(db_url()) as db:
        turn = db.get(Turn, turn_id)
        if turn is None:
            raise InputError("no such turn", {"turn_id": turn_id})
        turn.reply_audio_ref = reply_ref
        timings = {**(turn.timings or {}), "tts": timing}
        timings["pipeline_s"] = round(
            sum(float(v.get("total_s") or 0) for v in timings.values() if isinstance(v, dict)), 4
        )
        created = turn.created_at
        if created is not None:
            created = created if created.tzinfo else created.replace(tzinfo=UTC)
            timings["wall_s"] = round((utcnow() - created).total_seconds(), 3)
        turn.timings = timings
        turn.status = TurnStatus.done
        return timings


def early_clip(task_id: str | None, wait_s: float) -> State | None:
    """The result of a sentence's early tts.synthesize, or None when tts.turn must speak it itself: never
    sent, still queued (revoked here, so it is not spoken twice), lost, or not finished within wait_s."""
    if not task_id:
        return None
    import celery.exceptions
    from celery.result import AsyncResult

    res = AsyncResult(task_id, app=celery_app)
    if res.state == "PENDING":  # queued behind this task (a retry), or its record expired
        res.revoke()
        return None
    try:
        # Safe to wait inside a task: it has started on another process of the pool, it is not queued behind us.
        res.get(timeout=wait_s, propagate=False, disable_sync_subtasks=False)
    except celery.exceptions.TimeoutError:
        res.revoke()
        return None
    if res.successful():
        return res.result
    if isinstance(res.result, EmptyInput):
        return {"audio_ref": None, "cancelled": False}  # nothing speakable in the sentence
    if isinstance(res.result, NoVoiceForLanguage):
        return {"audio_ref": None, "cancelled": False, "no_voice": True}
    return None  # it failed: speaking it here raises the real error on this stage
