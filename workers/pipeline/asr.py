"""asr: the turn's audio → transcript and language on the record, and a `transcribed` event.

A language the client named forces ASR (detection is weak on short Chinese); else it is detected. A long
recording fans out: its pieces go to the asr pool as a Celery group, and `join` records the transcript, after
which the chain goes on to rag (Celery appends the rest of the chain to the chord).
"""

from __future__ import annotations

import logging

from workers.core import events
from workers.core.errors import EmptyInput, InputError, TurnCancelled
from workers.core.event_schema import Segment, Transcribed
from workers.core.records import Turn
from workers.pipeline.contracts import Piece, PieceTranscript, State, TurnRef
from workers.pipeline.stage import Context, FanOut, StageSkipped, record
from workers.tasks import asr as asr_tasks

log = logging.getLogger("medvoice.tasks.turns")


def transcribe(turn: Turn, ref: TurnRef, ctx: Context) -> TurnRef | FanOut:
    if not turn.audio_ref:
        raise InputError("this turn has no audio", {"turn_id": ref.turn_id})
    out = asr_tasks.start(turn.audio_ref, key=ref.turn_id, language=turn.language or None)
    if "result" in out or ctx.in_process or not out["pieces"]:
        return transcribed(ref.turn_id, asr_tasks.transcribe_here(out))
    log.info("turn=%s asr: %d pieces", ref.turn_id, len(out["pieces"]))
    return FanOut(
        ref.turn_id,
        asr_tasks.pieces_chord(
            "asr.turn_piece",
            [{"turn_id": ref.turn_id, "piece": p} for p in out["pieces"]],
            "asr.turn_join",
            {"turn_id": ref.turn_id, "meta": out["meta"]},
        ),
    )


def piece(_turn: None, p: Piece, _ctx: Context) -> PieceTranscript:
    """A failure here marks the turn `error` (the chord then never joins)."""
    if events.is_cancelled(p.turn_id):
        raise TurnCancelled("the turn was cancelled", {"turn_id": p.turn_id})
    return PieceTranscript(p.turn_id, asr_tasks.transcribe_piece(**p.spec))


def join(pieces: list[State], ref: TurnRef, meta: State) -> TurnRef:
    if any(p.get("skipped") for p in pieces):
        raise StageSkipped("finished")
    if events.is_cancelled(ref.turn_id):
        raise TurnCancelled("the turn was cancelled", {"turn_id": ref.turn_id})
    return transcribed(ref.turn_id, asr_tasks.join_pieces(pieces, meta))


def transcribed(turn_id: str, result: State) -> TurnRef:
    """Record what was heard; the stream gets `transcribed`."""
    text = (result.get("text") or "").strip()
    if not text:
        raise EmptyInput("no speech was recognised in the audio", {"duration_s": result.get("duration_s")})
    timing = {
        **result["timings"],
        "audio_s": result["duration_s"],
        "language_probability": result.get("language_probability"),
    }
    record(turn_id, "asr", timing, transcript=text, language=result.get("language"))
    events.emit(
        turn_id,
        Transcribed(
            language=result.get("language"),
            text=text,
            duration_s=result["duration_s"],
            timings=result["timings"],
            segments=[
                Segment(start=seg["start"], end=seg["end"], text=seg["text"]) for seg in result.get("segments") or []
            ],
        ),
    )
    log.info(
        "turn=%s asr: %.2fs of audio, lang=%s, rtf=%.3f, pieces=%s, hotwords=%s",
        turn_id,
        result["duration_s"],
        result.get("language"),
        result["timings"]["rtf"],
        result["timings"].get("pieces", 1),
        result["timings"].get("hotwords", 0),
    )
    return TurnRef(turn_id)
