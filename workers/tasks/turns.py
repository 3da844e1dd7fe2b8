"""The consultation turn pipeline: a Celery chain asr.turn → rag.turn → llm.turn → tts.turn.

The API creates the Turn row, stores the upload and sends the chain by task name; a typed
question starts at rag.turn. Each stage runs on its own pool's queue, reads what it needs from the Turn in
SQL, does its work with the pool's engine (loaded once per worker process), then records its result and
timing on the Turn and appends an event to the turn's Redis stream (workers/events.py):

    (each stage first appends `status` {status} as it moves the turn to its status)
    asr.turn   queued → transcribing; transcript, language, timings.asr            event `transcribed`
    rag.turn   → retrieving; Citation rows [1]..[k], timings.rag                    event `retrieved`
    llm.turn   → generating; answer (numbers-guarded, [n]-attributed), guard_fired,
               timings.llm (history from earlier turns, token-bounded)               events `sentence`…, `answered`
               each sentence is sent to the tts pool (tts.synthesize) as soon as it is generated,
               so its clip is spoken while the LLM goes on                          events `audio`… (tts pool)
    tts.turn   → speaking; takes those clips (speaks any that are missing), the joined reply WAV,
               reply_audio_ref, timings.tts → done                                  events `audio_ready`, `done`

A failing stage marks the turn `error` with "<stage>: <code>: <reason>", appends an `error` event and stops
the chain. A turn whose cancel flag is set (POST /v1/turns/{id}/cancel) stops at the next stage boundary,
between two LLM tokens, or before the next sentence is spoken: status `error` ("<stage>: turn_cancelled"),
event `cancelled`. Transient broker/database errors are retried (settings.consult_stage_retries) and every stage
write is idempotent — fields are overwritten, a turn's citations are replaced, files are replaced
atomically — so a retried or re-delivered stage never duplicates rows; on the stream, a re-run stage first
appends `restart` {stage}, so a client drops that stage's earlier events. A turn already `done` or `error`
is left alone by a late stage. Logs carry ids, codes and timings only, never clinical text.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

import celery.exceptions
import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from celery import Task
from sqlalchemy import delete, select

from knowledge.focus import focus_passages
from workers import answering, engines, events
from workers.celery_app import celery_app
from workers.db import session_scope
from workers.engines.refs import to_ref
from workers.errors import EmptyInput, EngineFailure, InputError, MedvoiceError, TurnCancelled, from_exception
from workers.grounding import (
    NumbersGuard,
    answer_language,
    attribute,
    cited_numbers,
    context_texts,
    disclaimer,
    is_canned,
    no_answer,
    passages_from_hits,
    unverified,
)
from workers.records import Citation, Turn, TurnStatus
from workers.settings import get_settings
from workers.tasks import asr as asr_tasks
from workers.tasks import llm as llm_tasks
from workers.tasks import rag as rag_tasks
from workers.tasks import tts as tts_tasks

log = logging.getLogger("medvoice.tasks.turns")

TRANSIENT = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    sqlalchemy.exc.OperationalError,
)
FINISHED = (TurnStatus.done, TurnStatus.error)
STAGES = ("asr.turn", "rag.turn", "llm.turn", "tts.turn")  # the API chains them by name (app/routes/turns.py)


class StageSkipped(Exception):
    """The turn is already finished (done or error): a late or re-delivered stage does nothing."""


def _db_url() -> str:
    return get_settings().resolved_database_url


def _begin(turn_id: str, status: TurnStatus) -> Turn:
    """Move the turn to this stage's status; a detached copy of the row for reading."""
    with session_scope(_db_url()) as db:
        turn = db.get(Turn, turn_id)
        if turn is None:
            raise InputError("no such turn", {"turn_id": turn_id})
        if turn.status in FINISHED:
            raise StageSkipped(turn.status.value)
        if events.is_cancelled(turn_id):
            raise TurnCancelled("the turn was cancelled", {"turn_id": turn_id})
        turn.status = status
        db.flush()
        db.expunge(turn)
        return turn


def _announce_rerun(turn_id: str, stage: str, *types: str) -> bool:
    """A re-delivered stage streams its events again: a `restart` event tells clients to drop the earlier ones."""
    rerun = any(e.get("type") in types for e in events.read_all(turn_id))
    if rerun:
        events.append(turn_id, "restart", stage=stage)
    return rerun


def _enter(turn_id: str, status: TurnStatus, stage: str, *rerun_types: str) -> tuple[Turn, bool]:
    """Start a stage: the turn's new status in SQL, `restart` if the stage re-runs, then a `status` event.
    Returns a detached copy of the row and whether the stage is a re-run."""
    turn = _begin(turn_id, status)
    rerun = _announce_rerun(turn_id, stage, *rerun_types)
    events.append(turn_id, "status", status=status.value)
    return turn, rerun


def _record(turn_id: str, stage: str, timing: dict[str, Any], **fields: Any) -> None:
    with session_scope(_db_url()) as db:
        turn = db.get(Turn, turn_id)
        if turn is None:
            raise InputError("no such turn", {"turn_id": turn_id})
        for name, value in fields.items():
            setattr(turn, name, value)
        turn.timings = {**(turn.timings or {}), stage: timing}  # a new dict: JSON columns track assignment


def _fail(turn_id: str, stage: str, exc: BaseException) -> None:
    err = from_exception(exc)
    reason = f"{stage}: {err.code}: {err.message or type(exc).__name__}"
    try:
        with session_scope(_db_url()) as db:
            turn = db.get(Turn, turn_id)
            if turn is not None and turn.status != TurnStatus.done:
                turn.status = TurnStatus.error
                turn.error = reason[:2000]
    except Exception:
        log.exception("turn=%s could not record the %s failure", turn_id, stage)
    try:
        # A client's stop ends the stream with `cancelled`; anything else with `error`.
        events.append(turn_id, "cancelled" if isinstance(err, TurnCancelled) else "error", stage=stage,
                      code=err.code, message=err.message, http_status=err.http_status)
    except Exception:
        log.exception("turn=%s could not publish the %s failure", turn_id, stage)
    log.warning("turn=%s stage=%s failed: %s", turn_id, stage, err.code)


def _run_stage(task: Task, stage: str, state: dict[str, Any], body: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    if not isinstance(state, dict):
        raise InputError("a pipeline stage takes {turn_id, ...}", {"field": "state"})
    turn_id = events.check_turn_id(state.get("turn_id") or "")
    if state.get("skipped"):
        return state
    try:
        return body(turn_id)
    except celery.exceptions.Ignore:
        raise  # the task replaced itself (a long recording's pieces): not a failure
    except StageSkipped as exc:
        log.info("turn=%s stage=%s skipped: turn already %s", turn_id, stage, exc)
        return {"turn_id": turn_id, "skipped": True}
    except TRANSIENT as exc:
        retries = get_settings().consult_stage_retries
        # A database error's text carries the statement's parameters (a transcript, an answer): Celery logs
        # what it is given, so it gets a typed error naming the class only.
        plain = EngineFailure(f"transient {type(exc).__name__}", {"type": type(exc).__name__})
        if task.request.called_directly or task.request.retries >= retries:
            _fail(turn_id, stage, EngineFailure(f"{type(exc).__name__} after {retries} retries"))
            raise plain from None
        log.warning("turn=%s stage=%s transient %s, retry %d/%d", turn_id, stage, type(exc).__name__,
                    task.request.retries + 1, retries)
        raise task.retry(exc=plain, countdown=min(2 ** task.request.retries, 10)) from None
    except BaseException as exc:
        _fail(turn_id, stage, exc)
        raise


# ---- asr ------------------------------------------------------------------------------------------------
@celery_app.task(name="asr.turn", bind=True, throws=(MedvoiceError,), acks_late=True)
def asr_turn(self: Task, state: dict[str, Any]) -> dict[str, Any]:
    def body(turn_id: str) -> dict[str, Any]:
        turn, _rerun = _enter(turn_id, TurnStatus.transcribing, "asr", "transcribed")
        if not turn.audio_ref:
            raise InputError("this turn has no audio", {"turn_id": turn_id})
        # A language the client named forces ASR (detection is weak on short Chinese); else detect.
        out = asr_tasks.start(turn.audio_ref, key=turn_id, language=turn.language or None)
        if "result" in out or self.request.called_directly or not out["pieces"]:
            return _transcribed(turn_id, asr_tasks.transcribe_here(out))
        # A long recording: its pieces go to the asr pool as a group; asr.turn_join records the transcript
        # and the chain goes on from there to rag.turn (Celery appends the rest of the chain to the chord).
        log.info("turn=%s asr: %d pieces", turn_id, len(out["pieces"]))
        raise self.replace(asr_tasks.pieces_chord(
            "asr.turn_piece", [{"turn_id": turn_id, "piece": p} for p in out["pieces"]],
            "asr.turn_join", {"turn_id": turn_id, "meta": out["meta"]}))

    return _run_stage(self, "asr", state, body)


def _transcribed(turn_id: str, result: dict[str, Any]) -> dict[str, Any]:
    text = (result.get("text") or "").strip()
    if not text:
        raise EmptyInput("no speech was recognised in the audio", {"duration_s": result.get("duration_s")})
    timing = {**result["timings"], "audio_s": result["duration_s"],
              "language_probability": result.get("language_probability")}
    _record(turn_id, "asr", timing, transcript=text, language=result.get("language"))
    events.append(turn_id, "transcribed", language=result.get("language"), text=text,
                  duration_s=result["duration_s"], timings=result["timings"],
                  segments=[{k: seg[k] for k in ("start", "end", "text")} for seg in result.get("segments") or []])
    log.info("turn=%s asr: %.2fs of audio, lang=%s, rtf=%.3f, pieces=%s, hotwords=%s", turn_id, result["duration_s"],
             result.get("language"), result["timings"]["rtf"], result["timings"].get("pieces", 1),
             result["timings"].get("hotwords", 0))
    return {"turn_id": turn_id}


@celery_app.task(name="asr.turn_piece", bind=True, throws=(MedvoiceError,), acks_late=True)
def asr_turn_piece(self: Task, state: dict[str, Any]) -> dict[str, Any]:
    """One piece of a long recording; a failure marks the turn `error` (the chord then never joins)."""
    def body(turn_id: str) -> dict[str, Any]:
        if events.is_cancelled(turn_id):
            raise TurnCancelled("the turn was cancelled", {"turn_id": turn_id})
        return asr_tasks.transcribe_piece(**state["piece"])

    return _run_stage(self, "asr", state, body)


@celery_app.task(name="asr.turn_join", bind=True, throws=(MedvoiceError,), acks_late=True)
def asr_turn_join(self: Task, pieces: list[dict[str, Any]], state: dict[str, Any]) -> dict[str, Any]:
    def body(turn_id: str) -> dict[str, Any]:
        if any(p.get("skipped") for p in pieces):
            raise StageSkipped("finished")
        if events.is_cancelled(turn_id):
            raise TurnCancelled("the turn was cancelled", {"turn_id": turn_id})
        return _transcribed(turn_id, asr_tasks.join_pieces(pieces, state["meta"]))

    return _run_stage(self, "asr", state, body)


# ---- rag ------------------------------------------------------------------------------------------------
@celery_app.task(name="rag.turn", bind=True, throws=(MedvoiceError,), acks_late=True)
def rag_turn(self: Task, state: dict[str, Any]) -> dict[str, Any]:
    def body(turn_id: str) -> dict[str, Any]:
        s = get_settings()
        turn, _rerun = _enter(turn_id, TurnStatus.retrieving, "rag", "retrieved")
        question = (turn.transcript or turn.question_text or "").strip()
        if not question:
            raise EmptyInput("the turn has no question text", {"turn_id": turn_id})
        language = turn.language
        if not language:
            from workers.engines.llm import question_language

            language = question_language(question)
        t0 = time.perf_counter()
        res = rag_tasks.search(question, k=s.consult_top_k, language=answer_language(language))
        if "error" in res:
            raise InputError(res["error"]["message"], {"code": res["error"]["code"]})
        hits = [] if res.get("nothing_relevant") else res.get("hits") or []
        # Only passages that cover what the question is about go on, renumbered; none: the reply names what is missing.
        chosen = answering.select(question, passages_from_hits(hits, s.consult_top_k), s)
        passages = chosen.passages
        seconds = round(time.perf_counter() - t0, 4)
        with session_scope(s.resolved_database_url) as db:
            t = db.get(Turn, turn_id)
            if t is None:
                raise InputError("no such turn", {"turn_id": turn_id})
            # Replace, never append: a retried stage leaves exactly one set of citations.
            db.execute(delete(Citation).where(Citation.turn_id == turn_id))
            for p in passages:
                db.add(Citation(turn_id=turn_id, n=p["n"], chunk_id=p["chunk_id"][:128], document_id=p["doc_id"][:128],
                                title=(p["title"] or None) and p["title"][:300],
                                source=(p["source"] or None) and p["source"][:300], score=round(p["score"], 6)))
            if not t.language:
                t.language = language
            t.timings = {**(t.timings or {}), "rag": {"total_s": seconds, "hits": len(passages),
                                                      "retrieved": len(hits), "nothing_relevant": not passages,
                                                      "answerable": chosen.answerable,
                                                      "search_ms": res.get("timings_ms", {})}}
            t.verdicts = {"answerability": chosen.verdict}
        events.append(turn_id, "retrieved", count=len(passages), nothing_relevant=not passages,
                      answerable=chosen.answerable,
                      citations=[{k: p[k] for k in ("n", "title", "source", "score")} for p in passages])
        log.info("turn=%s rag: %d passages in %.3fs answerable=%s", turn_id, len(passages), seconds, chosen.answerable)
        return {"turn_id": turn_id, "language": language, "passages": passages,
                "missing": chosen.verdict.get("missing") or ""}

    return _run_stage(self, "rag", state, body)


# ---- speech while the answer streams -------------------------------------------------------------------------
def _speak_early(turn_id: str, index: int, text: str) -> str | None:
    """Send one answer sentence to the tts pool now, while the LLM goes on, so the first words are spoken
    long before the answer is finished. The task id goes to tts.turn; None (broker refused) → tts.turn speaks it."""
    try:
        return celery_app.send_task("tts.synthesize", kwargs={"text": text, "turn_id": turn_id, "index": index}).id
    except Exception as exc:  # noqa: BLE001 - speaking late is better than failing the answer
        log.warning("turn=%s sentence %d not sent to tts early: %s", turn_id, index, type(exc).__name__)
        return None


def _early_clip(task_id: str | None, wait_s: float) -> dict[str, Any] | None:
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
    return None  # it failed: speaking it here raises the real error on this stage


# ---- llm ------------------------------------------------------------------------------------------------
def history_messages(turn: Turn, max_turns: int, max_tokens: int,
                     count_tokens: Callable[[list], int]) -> list[dict[str, str]]:
    """Earlier finished turns of the consultation as user/assistant pairs, newest kept, within max_tokens."""
    if max_turns <= 0 or max_tokens <= 0:
        return []
    with session_scope(_db_url()) as db:
        rows = list(db.scalars(
            select(Turn).where(Turn.consultation_id == turn.consultation_id, Turn.index < turn.index,
                               Turn.status == TurnStatus.done).order_by(Turn.index.desc()).limit(max_turns)
        ))
        pairs = [(r.transcript or r.question_text or "", r.answer or "") for r in rows]
    kept: list[dict[str, str]] = []
    for question, answer in pairs:  # newest first
        # A canned reply (nothing in the knowledge base, nothing verifiable) tells the model nothing, and a small
        # model given one in its history tends to repeat it for the next question.
        if not question.strip() or not answer.strip() or is_canned(answer):
            continue
        candidate = [{"role": "user", "content": question.strip()}, {"role": "assistant", "content": answer.strip()},
                     *kept]
        if count_tokens(candidate) > max_tokens:
            break
        kept = candidate
    return kept


@celery_app.task(name="llm.turn", bind=True, throws=(MedvoiceError,), acks_late=True)
def llm_turn(self: Task, state: dict[str, Any]) -> dict[str, Any]:
    def body(turn_id: str) -> dict[str, Any]:
        s = get_settings()
        turn, _rerun = _enter(turn_id, TurnStatus.generating, "llm", "sentence", "answered")
        question = (turn.transcript or turn.question_text or "").strip()
        language = state.get("language") or turn.language
        passages = state.get("passages") or []
        r = events.client()
        sentences: list[str] = []
        clips: list[str | None] = []  # the tts.synthesize task speaking each sentence, sent as it appears
        t0 = time.perf_counter()

        def emit(text: str) -> None:
            events.append(turn_id, "sentence", r=r, index=len(sentences), text=text)
            clips.append(_speak_early(turn_id, len(sentences), text) if s.consult_stream_tts else None)
            sentences.append(text)

        if s.consult_safety:
            guard_fired, verdicts, timing = _answer_safely(turn, question, language, passages, state, emit, r)
        else:
            guard_fired, verdicts, timing = _answer_unchecked(turn, question, language, passages, emit, r)
        if not sentences:
            # Nothing generated, or every sentence failed its check: there were passages, so point at them
            # rather than claim the knowledge base has nothing.
            emit(unverified(language))
            verdicts["mode"] = "unverified"
        timing["total_s"] = round(time.perf_counter() - t0, 4)
        sep = "" if answer_language(language) == "zh" else " "
        answer = sep.join(sentences)
        notice = disclaimer(s, language)
        verdicts = {**(turn.verdicts or {}), **verdicts}
        _record(turn_id, "llm", timing, answer=answer, guard_fired=guard_fired, disclaimer=notice, verdicts=verdicts)
        events.append(turn_id, "answered", r=r, sentences=len(sentences), guard_fired=guard_fired,
                      disclaimer=notice, mode=verdicts.get("mode"),
                      citations=cited_numbers(answer, [p["n"] for p in passages]), timings=timing)
        log.info("turn=%s llm: %d sentences in %.3fs mode=%s guard=%s", turn_id, len(sentences), timing["total_s"],
                 verdicts.get("mode"), guard_fired)
        return {"turn_id": turn_id, "sentences": sentences, "clips": clips}

    return _run_stage(self, "llm", state, body)


def _prompt(turn: Turn, question: str, language: str | None,
            passages: list[dict[str, Any]]) -> tuple[Any, list, list, list[str]]:
    """The engine, the chat for this turn (history, focused passages) and the passage texts it used."""
    s = get_settings()
    engine = engines.get("llm")
    history = history_messages(turn, s.consult_history_turns, s.consult_history_tokens,
                               lambda msgs: len(engine.tokens_for(msgs)))
    texts = [p["text"] for p in passages]
    if s.consult_context_tokens:  # the sentences that bear on the question: a shorter prompt to evaluate
        texts = focus_passages(question, texts, s.consult_context_tokens, engine.count_tokens)
    msgs = llm_tasks.build_prompt(question=question, context=context_texts(passages, texts), history=history,
                                  language=answer_language(language))
    return engine, msgs, history, texts


def _generation_timing(result: dict[str, Any], history: list, texts: list[str],
                       passages: list[dict[str, Any]]) -> dict[str, Any]:
    return {**result["timings"], "history_turns": len(history) // 2,
            "focused_passages": sum(t != p["text"] for t, p in zip(texts, passages)),
            "finish_reason": result["finish_reason"]}


def _answer_safely(turn: Turn, question: str, language: str | None, passages: list[dict[str, Any]],
                   state: dict[str, Any], emit: Callable[[str], None], r: Any) -> tuple[bool, dict, dict]:
    """The checked answer (workers/answering.py): quoted, or generated sentence by sentence and claim-checked."""
    s = get_settings()
    prompt: dict[str, Any] = {}

    def generate(on_sentence: Callable[[str], bool], stop: Callable[[], bool]) -> dict[str, Any]:
        engine, msgs, history, texts = _prompt(turn, question, language, passages)
        prompt.update(history=history, texts=texts)
        cancel = events.CancelCheck(turn.id, r=r)
        result = engine.generate(msgs, max_tokens=s.consult_max_tokens or s.llm_max_tokens,
                                 cancel=lambda: stop() or cancel(), on_sentence=lambda _i, text: on_sentence(text),
                                 first_chunk_comma=False)
        # A stop after enough sentences is not the clinician's cancel.
        result["cancelled"] = result["cancelled"] and events.is_cancelled(turn.id)
        if result["cancelled"]:
            raise TurnCancelled("the turn was cancelled during generation", {"turn_id": turn.id})
        return result

    out = answering.answer(question, language, passages, s, emit, generate, missing=state.get("missing") or "")
    timing: dict[str, Any] = {"mode": out.mode, "attributed": out.attributed,
                              "sentences_generated": len(out.claims),
                              "guard_replaced": sum(c["action"] == "replaced" for c in out.claims),
                              "guard_dropped": sum(c["action"] == "dropped" for c in out.claims)}
    if out.generation is not None:
        timing = {**_generation_timing(out.generation, prompt.get("history", []), prompt.get("texts", []), passages),
                  **timing}
    elif not passages:
        timing["skipped"] = "nothing in the knowledge base covers the question"
    if out.guard_fired:
        log.info("turn=%s claim check: %d replaced, %d dropped", turn.id, timing["guard_replaced"],
                 timing["guard_dropped"])
    return out.guard_fired, out.verdicts(), timing


def _answer_unchecked(turn: Turn, question: str, language: str | None, passages: list[dict[str, Any]],
                      emit: Callable[[str], None], r: Any) -> tuple[bool, dict, dict]:
    """The answer with the numbers guard only (consult_safety off): kept to measure what the checks add."""
    s = get_settings()
    if not passages:
        emit(no_answer(language))
        return False, {"mode": "no_answer"}, {"skipped": "nothing relevant in the knowledge base"}
    guard = NumbersGuard(passages)
    counts = {"generated": 0, "replaced": 0, "dropped": 0, "attributed": 0}
    engine, msgs, history, texts = _prompt(turn, question, language, passages)

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
            marked = attribute(text, passages)
            counts["attributed"] += marked != text
            text = marked
        emit(text)

    result = engine.generate(msgs, max_tokens=s.consult_max_tokens or s.llm_max_tokens,
                             cancel=events.CancelCheck(turn.id, r=r), on_sentence=on_sentence, first_chunk_comma=False)
    if result["cancelled"]:
        raise TurnCancelled("the turn was cancelled during generation", {"turn_id": turn.id})
    timing = {**_generation_timing(result, history, texts, passages), "mode": "generated",
              "attributed": counts["attributed"], "sentences_generated": counts["generated"],
              "guard_replaced": counts["replaced"], "guard_dropped": counts["dropped"]}
    return guard.fired, {"mode": "generated"}, timing


# ---- tts ------------------------------------------------------------------------------------------------
@celery_app.task(name="tts.turn", bind=True, throws=(MedvoiceError,), acks_late=True)
def tts_turn(self: Task, state: dict[str, Any]) -> dict[str, Any]:
    def body(turn_id: str) -> dict[str, Any]:
        import numpy as np
        import soundfile as sf

        s = get_settings()
        # Sentence clips stream in (`audio`) before this stage starts: only a finished earlier run means a re-run.
        _turn, rerun = _enter(turn_id, TurnStatus.speaking, "tts", "audio_ready")
        t0 = time.perf_counter()
        clips = []
        early = list(state.get("clips") or [])
        taken = 0
        for index, sentence in enumerate(state.get("sentences") or []):
            out = _early_clip(early[index] if index < len(early) else None, s.consult_stream_tts_wait_s)
            if out is not None:
                taken += 1
                if rerun and out.get("audio_ref"):  # clients dropped the earlier `audio` events at `restart`
                    events.append(turn_id, "audio", index=index, audio_ref=out["audio_ref"],
                                  duration_s=out.get("duration_s"), sample_rate=out.get("sample_rate"))
            else:
                try:
                    out = tts_tasks.synthesize(sentence, turn_id=turn_id, index=index)
                except EmptyInput:
                    continue  # nothing speakable (a lone citation marker): no clip
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
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".reply.{os.getpid()}.tmp.wav")
            sf.write(str(tmp), joined, rate, subtype="PCM_16", format="WAV")
            os.replace(tmp, path)  # atomic: a retried stage replaces, never half-writes
            reply_ref = to_ref(s, path)
            duration = round(joined.shape[0] / rate, 3)
        timing = {"total_s": round(time.perf_counter() - t0, 4), "clips": len(clips), "streamed_clips": taken,
                  "audio_s": duration}
        with session_scope(s.resolved_database_url) as db:
            turn = db.get(Turn, turn_id)
            if turn is None:
                raise InputError("no such turn", {"turn_id": turn_id})
            turn.reply_audio_ref = reply_ref
            timings = {**(turn.timings or {}), "tts": timing}
            stage_total = sum(float(v.get("total_s") or 0) for v in timings.values() if isinstance(v, dict))
            created = turn.created_at
            timings["pipeline_s"] = round(stage_total, 4)
            if created is not None:

                from workers.records import utcnow

                created = created if created.tzinfo else created.replace(tzinfo=UTC)
                timings["wall_s"] = round((utcnow() - created).total_seconds(), 3)
            turn.timings = timings
            turn.status = TurnStatus.done
        if reply_ref:
            events.append(turn_id, "audio_ready", audio_ref=reply_ref, duration_s=duration)
        events.append(turn_id, "done", status="done", timings=timings)
        log.info("turn=%s done: %d clips, %.2fs of reply audio", turn_id, len(clips), duration)
        return {"turn_id": turn_id, "reply_audio_ref": reply_ref}

    return _run_stage(self, "tts", state, body)
