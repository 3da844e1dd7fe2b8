"""The consultation turn pipeline as Celery tasks: asr.turn → rag.turn → llm.turn → tts.turn.

The API creates the Turn row, stores the upload and sends the chain by task name (workers.pipeline.STAGES);
a typed question starts at rag.turn. Each task runs on its own pool's queue and is a thin wrapper: the stage
itself is a plain function in workers/pipeline/ (asr.py, rag.py, llm.py, tts.py) taking and giving the
contracts of workers/pipeline/contracts.py, and what every stage does around it (status, restart events,
cancellation, retries, the failure record) is workers/pipeline/stage.py `run`. The events each stage appends
to the turn's stream are defined in workers/core/event_schema.py. The stages' modules (SQL, numpy, the
knowledge code) are imported inside the tasks: a worker's parent imports this module and forks its children
from what it holds.

    asr.turn   → transcribing: transcript, language, timings.asr (long audio: asr.turn_piece ×n → asr.turn_join)
    rag.turn   → retrieving: Citation rows [1]..[k] of the documents that cover the question, timings.rag
    llm.turn   → generating: the checked, cited answer sentence by sentence (each sent to the tts pool as it comes),
               disclaimer, verdicts, timings.llm
    tts.turn   → speaking: the joined reply WAV, timings.tts → done
"""

from __future__ import annotations

from typing import Any

from celery import Task

from workers.celery_app import celery_app
from workers.core.errors import MedvoiceError
from workers.core.event_schema import EventType
from workers.pipeline import STAGES
from workers.pipeline.contracts import Answered, Heard, Piece, Retrieved, State, TurnRef

__all__ = ["STAGES", "run"]


def run(task: Task, stage: str, state: Any, read: Any, work: Any, status: str | None = None, *rerun: Any) -> State:
    """workers.pipeline.stage.run, with the turn's status named by its value."""
    from workers.core.records import TurnStatus
    from workers.pipeline.stage import run as run_stage

    return run_stage(task, stage, state, read, work, TurnStatus(status) if status else None, tuple(rerun))


@celery_app.task(name="asr.turn", bind=True, throws=(MedvoiceError,), acks_late=True)
def asr_turn(self: Task, state: State) -> State:
    from workers.pipeline import asr

    return run(self, "asr", state, TurnRef.from_state, asr.transcribe, "transcribing", EventType.transcribed)


@celery_app.task(name="asr.turn_heard", bind=True, throws=(MedvoiceError,), acks_late=True)
def asr_turn_heard(self: Task, state: State) -> State:
    """A live utterance whose final transcript the session already has (made at the speaker's first pause, of
    this very audio, on the live pool): recorded as asr.turn would record it, then the chain goes on."""
    from workers.pipeline import asr

    return run(
        self,
        "asr",
        state,
        Heard.from_state,
        lambda _turn, heard, _ctx: asr.transcribed(heard.turn_id, heard.result),
        "transcribing",
        EventType.transcribed,
    )


@celery_app.task(name="asr.turn_piece", bind=True, throws=(MedvoiceError,), acks_late=True)
def asr_turn_piece(self: Task, state: State) -> State:
    from workers.pipeline import asr

    return run(self, "asr", state, Piece.from_state, asr.piece)


@celery_app.task(name="asr.turn_join", bind=True, throws=(MedvoiceError,), acks_late=True)
def asr_turn_join(self: Task, pieces: list[State], state: State) -> State:
    from workers.pipeline import asr

    return run(
        self, "asr", state, TurnRef.from_state, lambda _turn, ref, _ctx: asr.join(pieces, ref, state.get("meta") or {})
    )


@celery_app.task(name="rag.turn", bind=True, throws=(MedvoiceError,), acks_late=True)
def rag_turn(self: Task, state: State) -> State:
    from workers.pipeline import rag

    return run(self, "rag", state, TurnRef.from_state, rag.retrieve, "retrieving", EventType.retrieved)


@celery_app.task(name="llm.turn", bind=True, throws=(MedvoiceError,), acks_late=True)
def llm_turn(self: Task, state: State) -> State:
    from workers.pipeline import llm

    return run(
        self, "llm", state, Retrieved.from_state, llm.answer, "generating", EventType.sentence, EventType.answered
    )


@celery_app.task(name="tts.turn", bind=True, throws=(MedvoiceError,), acks_late=True)
def tts_turn(self: Task, state: State) -> State:
    # Sentence clips stream in (`audio`) before this stage starts: only a finished earlier run means a re-run.
    from workers.pipeline import tts

    return run(self, "tts", state, Answered.from_state, tts.speak, "speaking", EventType.audio_ready)
