"""rag: the question → the passages that cover it, as Citation rows [1]..[k], and a `retrieved` event.

Retrieval is the rag pool's knowledge base (hybrid search with time decay); then `answering.select` keeps
only the documents that cover what the question is about, renumbered. None: the answer will name what the
knowledge base lacks (`missing`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import delete

from knowledge import terms
from knowledge.terms import other_script_words
from knowledge.text import detect_language
from workers import answering, engines
from workers.core import events
from workers.core.db import session_scope
from workers.core.errors import EmptyInput, InputError
from workers.core.event_schema import Retrieved as RetrievedEvent
from workers.core.event_schema import RetrievedCitation
from workers.core.records import Citation, Turn
from workers.core.settings import get_settings
from workers.engines import rag as _rag_engine  # registers the "rag" engine loader
from workers.grounding import answer_language, passages_from_hits
from workers.pipeline.contracts import Retrieved, TurnRef
from workers.pipeline.stage import Context, db_url

log = logging.getLogger("medvoice.tasks.turns")


def prepare() -> None:
    """Run by the pool's child before it reports ready (workers/celery_app.py)."""
    terms.prepare()


def find(question: str, language: str) -> tuple[answering.Selection, list[dict], Any]:
    """The passages that cover `question`, selected and renumbered; the raw hits; the search result."""
    s = get_settings()
    kb = engines.get("rag")
    with _rag_engine.store_errors(s):
        res = kb.search(question, k=s.consult_top_k, language=answer_language(language))
    hits = [] if res.nothing_relevant else [h.as_dict() for h in res.hits]
    # The question's clinical words in the other language find a page written in it (a Chinese question about
    # an English guideline): a lexical search for them, merged by score.
    other = other_script_words(question)
    if other:
        more = kb.search(other, k=s.consult_top_k, mode="lexical")
        seen = {h["chunk_id"] for h in hits}
        hits += [h.as_dict() for h in more.hits if h.chunk_id not in seen]
        hits.sort(key=lambda h: -float(h.get("score") or 0.0))
    # Only passages that cover what the question is about go on, renumbered; none: the reply names what is missing.
    # (A search in each language may each bring its top k.)
    return answering.select(question, passages_from_hits(hits, s.consult_top_k * (2 if other else 1)), s), hits, res


def retrieve(turn: Turn, ref: TurnRef, _ctx: Context) -> Retrieved:
    turn_id = ref.turn_id
    question = (turn.transcript or turn.question_text or "").strip()
    if not question:
        raise EmptyInput("the turn has no question text", {"turn_id": turn_id})
    language = turn.language or detect_language(question)
    t0 = time.perf_counter()
    chosen, hits, res = find(question, language)
    passages = chosen.passages
    seconds = round(time.perf_counter() - t0, 4)
    with session_scope(db_url()) as db:
        t = db.get(Turn, turn_id)
        if t is None:
            raise InputError("no such turn", {"turn_id": turn_id})
        # Replace, never append: a retried stage leaves exactly one set of citations.
        db.execute(delete(Citation).where(Citation.turn_id == turn_id))
        for p in passages:
            db.add(
                Citation(
                    turn_id=turn_id,
                    n=p["n"],
                    chunk_id=p["chunk_id"][:128],
                    document_id=p["doc_id"][:128],
                    title=(p["title"] or None) and p["title"][:300],
                    source=(p["source"] or None) and p["source"][:300],
                    score=round(p["score"], 6),
                )
            )
        if not t.language:
            t.language = language
        t.timings = {
            **(t.timings or {}),
            "rag": {
                "total_s": seconds,
                "hits": len(passages),
                "retrieved": len(hits),
                "nothing_relevant": not passages,
                "answerable": chosen.answerable,
                "search_ms": res.timings_ms,
            },
        }
        t.verdicts = {"answerability": chosen.verdict}
    events.emit(
        turn_id,
        RetrievedEvent(
            count=len(passages),
            nothing_relevant=not passages,
            answerable=chosen.answerable,
            citations=[
                RetrievedCitation(n=p["n"], title=p["title"], source=p["source"], score=p["score"]) for p in passages
            ],
        ),
    )
    log.info("turn=%s rag: %d passages in %.3fs answerable=%s", turn_id, len(passages), seconds, chosen.answerable)
    return Retrieved(turn_id, language, passages, chosen.verdict.get("missing") or "")
