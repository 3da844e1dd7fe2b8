"""Speculative prefill: the prompt of an answer the LLM will write, evaluated up to its question while the
clinician is still speaking, so that after the endpoint only the question's tokens are left to evaluate.

A live session sends what it has heard so far (a stable partial transcript, then the transcript made at the
first pause): `rag.prefill` retrieves for it exactly as the rag stage would and says whether the answer will
be the LLM's (a quoted line or a "the knowledge base has no ..." needs no prompt); `llm.prefill` builds the
prompt the llm stage would build (system prompt, the consultation's history, the focused passages) and
evaluates it up to the question label (LlmEngine.question_prefix), leaving it in the process's KV cache and,
for the pool's other processes, in Redis for a short while.

The llm stage then takes whatever matches: its own prompt's prefix is looked up by the hash of its tokens, so
a prefill made from other passages, history or focus can never be used — it is simply not found — and the
answer is computed for the final transcript either way (`timings.llm.prefill`: held, moved or none).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from array import array
from types import SimpleNamespace
from typing import Any

import redis

from workers.core.settings import get_settings

log = logging.getLogger("medvoice.tasks.prefill")
KEY = "medvoice:prefill:"
TTL_S = 60  # a prefill is for the question being asked now: one not taken within a minute is not wanted


@functools.cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, health_check_interval=30)  # bytes in, bytes out (a KV cache)


def store() -> redis.Redis:
    return _redis(get_settings().redis_url)


def key(tokens: list[int]) -> str:
    return KEY + hashlib.sha256(array("i", tokens).tobytes()).hexdigest()


def stand_in(consultation_id: str | None) -> Any:
    """The turn about to be made, as the prompt sees it: the consultation's finished turns are its history."""
    return SimpleNamespace(id=None, consultation_id=consultation_id, index=2**31)


def stop(ticket: str) -> None:
    """Tell the llm.prefill of this ticket to stop (the utterance ended with other words)."""
    store().set(KEY + "stop:" + ticket, 1, ex=TTL_S)


def evaluate(engine: Any, messages: list[dict[str, str]], ticket: str | None = None) -> dict[str, Any]:
    """Prefill `messages` up to their question; its KV cache kept here and in Redis."""
    prefix = engine.question_prefix(messages)
    if not prefix:
        return {"skipped": "no question label"}
    stopped = (lambda: bool(store().exists(KEY + "stop:" + ticket))) if ticket else None
    out = engine.prefill(prefix, stop=stopped)
    data = engine.export_kv(prefix) if out["evaluated"] and not out["stopped"] else None
    if data:
        store().set(key(prefix), data, ex=TTL_S)
    return out


def take(engine: Any, messages: list[dict[str, str]]) -> str:
    """Before the llm stage evaluates its prompt: `held` (the KV cache already holds its prefix), `moved` (a
    prefill made in another process, loaded), or `none`."""
    prefix = engine.question_prefix(messages)
    if not prefix:
        return "none"
    if engine.held(prefix) == len(prefix):
        return "held"
    try:
        data = store().get(key(prefix))
    except Exception as exc:  # noqa: BLE001 - a prefill is a shortcut: without Redis the prompt is evaluated
        log.info("prefill lookup failed: %s", type(exc).__name__)
        return "none"
    return "moved" if data and engine.import_kv(prefix, data) else "none"
