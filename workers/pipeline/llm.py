"""llm: the retrieved passages → the checked, cited answer, sentence by sentence (workers/answering.py).

Each sentence is appended to the stream (`sentence`) and sent to the tts pool at once (`tts.synthesize`), so
it is spoken while the LLM goes on; then the answer, its disclaimer and what every check decided are recorded
(`answered`). History: earlier finished turns of the consultation, token-bounded, canned replies left out; a
chat turn brings its own (the conversation as the client sent it, bounded and filtered the same way) and is not
spoken (`Retrieved.speak` false: no sentence goes to the tts pool).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from knowledge import terms
from knowledge.focus import focus_passages
from workers import answering, engines
from workers.celery_app import celery_app
from workers.core import events
from workers.core.db import session_scope
from workers.core.errors import TurnCancelled
from workers.core.event_schema import Answered as AnsweredEvent
from workers.core.event_schema import Sentence, Timings
from workers.core.records import Turn, TurnStatus
from workers.core.settings import get_settings
from workers.grounding import (
    NumbersGuard,
    answer_language,
    attribute,
    cited_numbers,
    context_texts,
    disclaimer,
    is_canned,
    no_answer,
    unverified,
)
from workers.pipeline import prefill
from workers.pipeline.contracts import Answered, Passage, Retrieved, State
from workers.pipeline.stage import Context, db_url, record
from workers.tasks import llm as llm_tasks

log = logging.getLogger("medvoice.tasks.turns")
Emit = Callable[[str], None]


def prepare() -> None:
    """Run by the pool's child before it reports ready (workers/celery_app.py)."""
    terms.prepare()


def answer(turn: Turn, retrieved: Retrieved, ctx: Context) -> Answered:
    s = get_settings()
    turn_id = retrieved.turn_id
    question = (turn.transcript or turn.question_text or "").strip()
    language = retrieved.language or turn.language
    passages = retrieved.passages
    r = events.client()
    sentences: list[str] = []
    clips: list[str | None] = []  # the tts.synthesize task speaking each sentence, sent as it appears

    def emit(text: str) -> None:
        events.emit(turn_id, Sentence(index=len(sentences), text=text), r=r)
        clips.append(speak_early(turn_id, len(sentences), text) if s.consult_stream_tts and retrieved.speak else None)
        sentences.append(text)

    if s.consult_safety:
        guard_fired, verdicts, timing = _checked(turn, question, language, retrieved, emit, r)
    else:
        guard_fired, verdicts, timing = _unchecked(turn, question, language, retrieved, emit, r)
    if not sentences:
        # Nothing generated, or every sentence failed its check: there were passages, so point at them
        # rather than claim the knowledge base has nothing.
        emit(unverified(language))
        verdicts["mode"] = "unverified"
    timing["total_s"] = ctx.elapsed()
    text = ("" if answer_language(language) == "zh" else " ").join(sentences)
    notice = disclaimer(s, language)
    verdicts = {**(turn.verdicts or {}), **verdicts}
    record(turn_id, "llm", timing, answer=text, guard_fired=guard_fired, disclaimer=notice, verdicts=verdicts)
    cited = cited_numbers(text, [p["n"] for p in passages])
    events.emit(
        turn_id,
        AnsweredEvent(
            sentences=len(sentences),
            guard_fired=guard_fired,
            disclaimer=notice,
            mode=verdicts.get("mode"),
            citations=cited,
            timings=timing,
        ),
        r=r,
    )
    log.info(
        "turn=%s llm: %d sentences in %.3fs mode=%s guard=%s",
        turn_id,
        len(sentences),
        timing["total_s"],
        verdicts.get("mode"),
        guard_fired,
    )
    return Answered(turn_id, sentences, clips)


def speak_early(turn_id: str, index: int, text: str) -> str | None:
    """Send one answer sentence to the tts pool now, while the LLM goes on, so the first words are spoken
    long before the answer is finished. The task id goes to tts.turn; None (broker refused) → tts.turn speaks it."""
    try:
        return celery_app.send_task("tts.synthesize", kwargs={"text": text, "turn_id": turn_id, "index": index}).id
    except Exception as exc:  # noqa: BLE001 - speaking late is better than failing the answer
        log.warning("turn=%s sentence %d not sent to tts early: %s", turn_id, index, type(exc).__name__)
        return None


def history_messages(
    turn: Turn, max_turns: int, max_tokens: int, count_tokens: Callable[[list], int]
) -> list[dict[str, str]]:
    """Earlier finished turns of the consultation as user/assistant pairs, newest kept, within max_tokens."""
    if max_turns <= 0 or max_tokens <= 0:
        return []
    with session_scope(db_url()) as db:
        rows = list(
            db.scalars(
                select(Turn)
                .where(
                    Turn.consultation_id == turn.consultation_id,
                    Turn.index < turn.index,
                    Turn.status == TurnStatus.done,
                )
                .order_by(Turn.index.desc())
                .limit(max_turns)
            )
        )
        pairs = [(r.transcript or r.question_text or "", r.answer or "") for r in rows]
    return bounded_history(pairs, max_tokens, count_tokens)


def client_history(
    messages: list[dict[str, str]], max_turns: int, max_tokens: int, count_tokens: Callable[[list], int]
) -> list[dict[str, str]]:
    """A chat's earlier messages (user, assistant, ... oldest first) as the same bounded history."""
    if max_turns <= 0 or max_tokens <= 0:
        return []
    pairs = [
        (q["content"], a["content"])
        for q, a in zip(messages[0::2], messages[1::2])
        if q.get("role") == "user" and a.get("role") == "assistant"
    ]
    return bounded_history(pairs[::-1][:max_turns], max_tokens, count_tokens)


def bounded_history(
    pairs: list[tuple[str, str]], max_tokens: int, count_tokens: Callable[[list], int]
) -> list[dict[str, str]]:
    """(question, reply) pairs, newest first → chat messages, oldest first, as many as fit max_tokens."""
    kept: list[dict[str, str]] = []
    for question, reply in pairs:  # newest first
        # A canned reply (nothing in the knowledge base, nothing verifiable) tells the model nothing, and a small
        # model given one in its history tends to repeat it for the next question.
        if not question.strip() or not reply.strip() or is_canned(reply):
            continue
        candidate = [
            {"role": "user", "content": question.strip()},
            {"role": "assistant", "content": reply.strip()},
            *kept,
        ]
        if count_tokens(candidate) > max_tokens:
            break
        kept = candidate
    return kept


def prompt_for(
    turn: Turn, question: str, language: str | None, passages: list[Passage], chat: list[dict[str, str]] | None
) -> tuple[Any, list, list, list[str]]:
    """The engine, the chat for this turn (history, focused passages), the history and the passage texts used.
    `chat`: a chat turn's own earlier messages, instead of the consultation's earlier turns."""
    s = get_settings()
    engine = engines.get("llm")
    count = lambda msgs: len(engine.tokens_for(msgs))  # noqa: E731
    if chat is not None:
        history = client_history(chat, s.consult_history_turns, s.consult_history_tokens, count)
    else:
        history = history_messages(turn, s.consult_history_turns, s.consult_history_tokens, count)
    texts = [p["text"] for p in passages]
    if s.consult_context_tokens:  # the sentences that bear on the question: a shorter prompt to evaluate
        texts = focus_passages(question, texts, s.consult_context_tokens, engine.count_tokens)
    msgs = llm_tasks.build_prompt(
        question=question, context=context_texts(passages, texts), history=history, language=answer_language(language)
    )
    return engine, msgs, history, texts


def _generation_timing(result: State, history: list, texts: list[str], passages: list[Passage]) -> Timings:
    return {
        **result["timings"],
        "history_turns": len(history) // 2,
        "focused_passages": sum(t != p["text"] for t, p in zip(texts, passages)),
        "finish_reason": result["finish_reason"],
    }


def _checked(
    turn: Turn, question: str, language: str | None, retrieved: Retrieved, emit: Emit, r: Any
) -> tuple[bool, dict, dict]:
    """The checked answer (workers/answering.py): quoted, or generated sentence by sentence and claim-checked."""
    s = get_settings()
    passages = retrieved.passages
    prompt: dict[str, Any] = {}

    def generate(on_sentence: Callable[[str], bool], stop: Callable[[], bool]) -> State:
        engine, msgs, history, texts = prompt_for(turn, question, language, passages, retrieved.history)
        prompt.update(history=history, texts=texts, prefill=prefill.take(engine, msgs))
        cancel = events.CancelCheck(turn.id, r=r)
        result = engine.generate(
            msgs,
            max_tokens=s.consult_max_tokens or s.llm_max_tokens,
            cancel=lambda: stop() or cancel(),
            on_sentence=lambda _i, text: on_sentence(text),
            first_chunk_comma=False,
        )
        # A stop after enough sentences is not the clinician's cancel.
        result["cancelled"] = result["cancelled"] and events.is_cancelled(turn.id)
        if result["cancelled"]:
            raise TurnCancelled("the turn was cancelled during generation", {"turn_id": turn.id})
        return result

    out = answering.answer(question, language, passages, s, emit, generate, missing=retrieved.missing)
    timing: Timings = {
        "mode": out.mode,
        "attributed": out.attributed,
        "sentences_generated": len(out.claims),
        "guard_replaced": out.count("replaced"),
        "guard_dropped": out.count("dropped"),
    }
    if out.generation is not None:
        timing = {
            **_generation_timing(out.generation, prompt.get("history", []), prompt.get("texts", []), passages),
            "prefill": prompt.get("prefill"),
            **timing,
        }
    elif not passages:
        timing["skipped"] = "nothing in the knowledge base covers the question"
    if out.guard_fired:
        log.info(
            "turn=%s claim check: %d replaced, %d dropped", turn.id, timing["guard_replaced"], timing["guard_dropped"]
        )
    return out.guard_fired, out.verdicts(), timing


def _unchecked(
    turn: Turn, question: str, language: str | None, retrieved: Retrieved, emit: Emit, r: Any
) -> tuple[bool, dict, dict]:
    """The answer with the numbers guard only (consult_safety off): kept to measure what the checks add."""
    s = get_settings()
    passages = retrieved.passages
    if not passages:
        emit(no_answer(language))
        return False, {"mode": "no_answer"}, {"skipped": "nothing relevant in the knowledge base"}
    guard = NumbersGuard(list(passages))
    counts = {"generated": 0, "replaced": 0, "dropped": 0, "attributed": 0}
    engine, msgs, history, texts = prompt_for(turn, question, language, passages, retrieved.history)
    taken = prefill.take(engine, msgs)

    def on_sentence(_index: int, text: str) -> None:
        counts["generated"] += 1
        if s.consult_numbers_guard:
            checked = guard.check(text)
            if checked.fired:
                counts["replaced" if checked.text else "dropped"] += 1
            text = checked.text
        if not text:
            return
        if s.consult_attribute_citations:
            marked = attribute(text, list(passages))
            counts["attributed"] += marked != text
            text = marked
        emit(text)

    result = engine.generate(
        msgs,
        max_tokens=s.consult_max_tokens or s.llm_max_tokens,
        cancel=events.CancelCheck(turn.id, r=r),
        on_sentence=on_sentence,
        first_chunk_comma=False,
    )
    if result["cancelled"]:
        raise TurnCancelled("the turn was cancelled during generation", {"turn_id": turn.id})
    timing = {
        **_generation_timing(result, history, texts, passages),
        "prefill": taken,
        "mode": "generated",
        "attributed": counts["attributed"],
        "sentences_generated": counts["generated"],
        "guard_replaced": counts["replaced"],
        "guard_dropped": counts["dropped"],
    }
    return guard.fired, {"mode": "generated"}, timing
