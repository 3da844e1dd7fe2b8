"""A chat turn's own tasks (POST /v1/chat/completions), around the consultation pipeline's stages:
rag.turn → llm.chat_turn → llm.chat_done (workers.pipeline.contracts.CHAT_STAGES).

    llm.chat_turn   the llm stage (workers/pipeline/llm.py) with the conversation's earlier messages as its
                    history and nothing sent to the tts pool: the same answer checks as a spoken turn
    llm.chat_done   the end without speech (workers/pipeline/finish.py): status done, `done` on the stream

The API sends the chain by task name; `history` rides in llm.chat_turn's keyword arguments.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from workers.celery_app import celery_app
from workers.core.errors import MedvoiceError
from workers.core.event_schema import EventType
from workers.pipeline.contracts import Answered, Retrieved, State
from workers.tasks.turns import run


@celery_app.task(name="llm.chat_turn", bind=True, throws=(MedvoiceError,), acks_late=True)
def chat_turn(self: Task, state: State, history: list[dict[str, Any]] | None = None) -> State:
    from workers.pipeline import llm

    if isinstance(state, dict) and not state.get("skipped"):
        state = {**state, "speak": False, "history": list(history or [])}
    return run(
        self, "llm", state, Retrieved.from_state, llm.answer, "generating", EventType.sentence, EventType.answered
    )


@celery_app.task(name="llm.chat_done", bind=True, throws=(MedvoiceError,), acks_late=True)
def chat_done(self: Task, state: State) -> State:
    from workers.pipeline import finish

    return run(self, "finish", state, Answered.from_state, finish.finish)
