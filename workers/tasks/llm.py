"""llm.generate: stream an answer sentence by sentence onto the turn's Redis stream; return the full text.

Input (JSON): {turn_id, messages: [{role, content}] | question (+ context passages, history, language),
max_tokens?, temperature?}. Each sentence is appended to the turn's stream as it is produced
({type: "sentence", index, text}); the turn's cancel flag is checked between tokens; at the end one
{type: "llm_done", sentences, cancelled, timings} event. Returns {turn_id, text, sentences, cancelled,
finish_reason, timings: {first_token_s, first_sentence_s, total_s, tokens, tokens_per_s, ...}}.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from workers import engines
from workers.celery_app import celery_app
from workers.core import events
from workers.core.errors import EmptyInput, InputError, InputTooLarge, MedvoiceError
from workers.core.event_schema import LlmDone, Sentence
from workers.core.settings import get_settings
from workers.engines import llm as _llm_engine

log = logging.getLogger("medvoice.tasks.llm")
MAX_PROMPT_CHARS = 48_000
ROLES = ("system", "user", "assistant")


def _check_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise InputError("messages must be a non-empty list of {role, content}", {"field": "messages"})
    out = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise InputError(
                "each message needs a role (system/user/assistant) and string content", {"field": "messages"}
            )
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "user" and m["content"].strip() for m in out):
        raise EmptyInput("no user message with text", {"field": "messages"})
    return out


def build_prompt(
    messages: Any = None,
    question: str | None = None,
    context: list[str] | None = None,
    history: list[dict[str, str]] | None = None,
    language: str | None = None,
) -> list[dict[str, str]]:
    s = get_settings()
    if messages is not None:
        msgs = _check_messages(messages)
        if msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": s.llm_system_prompt}, *msgs]  # keeps the cached prefix
    else:
        if not isinstance(question, str) or not question.strip():
            raise EmptyInput("question is empty", {"field": "question"})
        if context is not None and (not isinstance(context, list) or not all(isinstance(c, str) for c in context)):
            raise InputError("context must be a list of strings", {"field": "context"})
        if history is not None and not isinstance(history, list):
            raise InputError("history must be a list of {role, content}", {"field": "history"})
        hist = _check_messages([*history, {"role": "user", "content": "x"}])[:-1] if history else None
        msgs = _llm_engine.build_messages(s.llm_system_prompt, question, context, hist, language)
    if sum(len(m["content"]) for m in msgs) > MAX_PROMPT_CHARS:
        raise InputTooLarge(f"the prompt exceeds {MAX_PROMPT_CHARS} characters", {"max_chars": MAX_PROMPT_CHARS})
    return msgs


@celery_app.task(name="llm.generate", bind=True, throws=(MedvoiceError,))
def generate(
    self: Task,
    turn_id: str,
    messages: list[dict[str, str]] | None = None,
    question: str | None = None,
    context: list[str] | None = None,
    history: list[dict[str, str]] | None = None,
    language: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> dict[str, Any]:
    s = get_settings()
    turn_id = events.check_turn_id(turn_id)
    msgs = build_prompt(messages, question, context, history, language)
    if max_tokens is not None and (not isinstance(max_tokens, int) or not 1 <= max_tokens <= 4096):
        raise InputError("max_tokens must be an integer from 1 to 4096", {"field": "max_tokens"})
    if temperature is not None and (not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2):
        raise InputError("temperature must be between 0 and 2", {"field": "temperature"})
    r = events.client()

    def on_sentence(index: int, text: str) -> None:
        events.emit(turn_id, Sentence(index=index, text=text), r=r)

    result = engines.get("llm").generate(
        msgs,
        max_tokens=max_tokens or s.llm_max_tokens,
        temperature=s.llm_temperature if temperature is None else float(temperature),
        cancel=events.CancelCheck(turn_id, r=r),
        on_sentence=on_sentence,
    )
    events.emit(
        turn_id,
        LlmDone(
            sentences=len(result["sentences"]),
            cancelled=result["cancelled"],
            finish_reason=result["finish_reason"],
            timings=result["timings"],
        ),
        r=r,
    )
    t = result["timings"]
    log.info(
        "llm.generate task=%s turn=%s tokens=%s first_sentence=%ss total=%ss cancelled=%s",
        self.request.id,
        turn_id,
        t["tokens"],
        t["first_sentence_s"],
        t["total_s"],
        result["cancelled"],
    )
    return {"turn_id": turn_id, **result}
