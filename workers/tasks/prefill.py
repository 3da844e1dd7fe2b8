"""rag.prefill and llm.prefill: a live session's speculative prefill (workers/pipeline/prefill.py).

rag.prefill {question, language?} → {llm: bool, language, passages}: the rag stage's retrieval and selection for
the question heard so far, and whether its answer will be written by the LLM. llm.prefill {question, language,
passages, consultation_id, ticket} → {tokens, evaluated, stopped, seconds}: that answer's prompt evaluated up to
its question, stopped between batches once the ticket's stop flag is set.
Both are speculative: sent at the lowest priority, dropped when not started in time, and nothing is recorded.
"""

from __future__ import annotations

import logging
from typing import Any

from knowledge.text import detect_language
from workers import engines
from workers.celery_app import celery_app
from workers.core.errors import EmptyInput, InputError, MedvoiceError
from workers.core.settings import get_settings

log = logging.getLogger("medvoice.tasks.prefill")
MAX_QUESTION_CHARS = 2000


def _question(question: Any) -> str:
    if not isinstance(question, str) or not question.strip():
        raise EmptyInput("question is empty", {"field": "question"})
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"question longer than {MAX_QUESTION_CHARS} characters", {"field": "question"})
    return question.strip()


@celery_app.task(name="rag.prefill", throws=(MedvoiceError,))
def rag_prefill(question: str, language: str | None = None) -> dict[str, Any]:
    # The stages' modules are imported by the task (in a pool child), not by a worker's parent.
    from workers import answering
    from workers.pipeline.rag import find

    question = _question(question)
    language = language or detect_language(question)
    chosen, _hits, _res = find(question, language)
    llm = answering.will_generate(question, language, chosen.passages, get_settings())
    log.info("rag.prefill: %d passages, llm=%s", len(chosen.passages), llm)
    return {"llm": llm, "language": language, "passages": chosen.passages if llm else []}


@celery_app.task(name="llm.prefill", throws=(MedvoiceError,))
def llm_prefill(
    question: str,
    passages: list[dict[str, Any]],
    language: str | None = None,
    consultation_id: str | None = None,
    ticket: str | None = None,
) -> dict[str, Any]:
    from workers.pipeline import prefill
    from workers.pipeline.llm import prompt_for

    question = _question(question)
    if not isinstance(passages, list) or not passages or not all(isinstance(p, dict) for p in passages):
        raise InputError("passages must be the list rag.prefill returned", {"field": "passages"})
    try:
        _engine, messages, _history, _texts = prompt_for(
            prefill.stand_in(consultation_id), question, language, passages, None
        )
    except KeyError as exc:
        raise InputError(f"a passage lacks {exc}", {"field": "passages"}) from None
    if ticket is not None and (not isinstance(ticket, str) or len(ticket) > 64):
        raise InputError("ticket must be a short string", {"field": "ticket"})
    out = prefill.evaluate(engines.get("llm"), messages, ticket)
    log.info("llm.prefill: %s", {k: v for k, v in out.items() if k != "skipped"} or out)
    return out
