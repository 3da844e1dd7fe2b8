"""POST /v1/chat/completions: the clinic's knowledge base for chat front ends that speak OpenAI's chat API.

The last user message is answered exactly as a consultation turn's question is: the rag stage (retrieval, the
answerability gate), then the llm stage with every answer check (extractive quotes, claim support, the
no-answer reply naming what is missing, spoken style, the disclaimer, English and Chinese), on the same pools
(workers.pipeline.contracts.CHAT_STAGES: rag.turn → llm.chat_turn → llm.chat_done). Nothing is spoken.

- **Records.** Clinical questions are clinical records: each call is a Turn (`input_kind` "chat", no audio) of
  a Consultation owned by the caller. The consultation is the conversation's: its key is the client's
  `metadata.conversation_id` or `X-Conversation-Id` header when given, else the conversation's first user
  message (a chat front end resends the whole conversation on every call, so every call of one conversation
  finds the same consultation). The consultation is titled `chat:<sha256 of the key>` (the key itself, which
  may be clinical text, is not stored there). Every call writes `turn.create` and `openai.chat` audit events
  (ids, counts, codes, never text), and `consultation.create` when it opened the consultation.
- **History.** The earlier user/assistant messages, as sent (their disclaimer removed), are the llm stage's
  history (bounded like a consultation's). System and developer messages are not followed: the clinic's system
  prompt and checks decide how answers are made.
- **Response.** `choices[0].message.content` is the answer with its `[n]` marks, then the disclaimer;
  `choices[0].message.citations` lists the passages ({n, title, source, score, document_id, chunk_id,
  cited}); `turn_id` and `consultation_id` say where it is recorded. `stream=true`: `chat.completion.chunk`s,
  one per answer sentence as the checks release it (read from the turn's Redis event stream), the disclaimer,
  then a last chunk with `finish_reason` "stop" and `citations`; `data: [DONE]`. A client that goes away stops
  the turn (its cancel flag).
- **Parameters.** `model` must be one this server serves (names.CHAT_MODELS); `n` 1; text content only (a
  string or text parts); `temperature`, `max_tokens` and the like are accepted and ignored: the answer checks
  bound what is said.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit import audit
from app.deps import AppSettings, CurrentUser, DbSession
from app.routes.openai.errors import OpenAIError, OpenAIRoute, as_openai, audit_call, bad_request, failure
from app.routes.openai.names import CHAT_MODELS
from knowledge.text import detect_language
from workers.core import events
from workers.core.db import new_session
from workers.core.errors import BrokerUnavailable, MedvoiceError
from workers.core.event_schema import Answered, Done, Failed, Restart, Sentence, Timeout, decode
from workers.core.records import Consultation, ConsultationStatus, Turn, TurnStatus, User, new_id
from workers.core.settings import Settings
from workers.grounding import answer_language, cited_numbers
from workers.pipeline.contracts import CHAT_STAGES

log = logging.getLogger("medvoice.api.openai")
router = APIRouter(prefix="/v1/chat", tags=["openai-compatible"], route_class=OpenAIRoute)

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
MAX_MESSAGES = 200
HEARTBEAT_MS = 1000


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Any]
    stream: bool = False
    n: int | None = None
    metadata: dict[str, Any] | None = None
    stream_options: dict[str, Any] | None = None


# ---- the request ------------------------------------------------------------------------------------------
def _text(message: dict[str, Any], index: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(
                    f"messages[{index}]: only text content is answered here, not '{kind}'",
                    f"messages[{index}].content",
                    "unsupported_content",
                )
            parts.append(part["text"])
        return "\n".join(parts)
    raise bad_request(f"messages[{index}].content must be a string or text parts", f"messages[{index}].content")


def strip_disclaimer(text: str, settings: Settings) -> str:
    """An earlier answer as the client sent it back, without the disclaimer this server appended."""
    text = text.strip()
    for notice in (settings.consult_disclaimer_en, settings.consult_disclaimer_zh):
        notice = (notice or "").strip()
        if notice and text.endswith(notice):
            text = text[: -len(notice)].rstrip()
    return text


def parse(body: ChatIn, settings: Settings) -> tuple[str, list[dict[str, str]], str]:
    """The question (the last user message), the history (user/assistant pairs, oldest first) and the text
    the conversation key is made from when the client names none (its first user message)."""
    if body.model not in CHAT_MODELS:
        raise bad_request(
            f"unknown model '{body.model}'; this server answers with: " + ", ".join(CHAT_MODELS),
            "model",
            "model_not_found",
        )
    if body.n not in (None, 1):
        raise bad_request("only n=1 is supported", "n")
    if not body.messages:
        raise bad_request("'messages' must hold at least one user message", "messages", "missing_required_parameter")
    if len(body.messages) > MAX_MESSAGES:
        raise bad_request(f"at most {MAX_MESSAGES} messages", "messages")
    said: list[tuple[str, str]] = []
    for i, m in enumerate(body.messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise bad_request(f"messages[{i}] needs a role: " + ", ".join(ROLES), f"messages[{i}].role")
        said.append((m["role"], _text(m, i)))
    role, question = said[-1]
    question = question.strip()
    if role != "user" or not question:
        raise bad_request("the last message must be the user's question, with text", "messages")
    if len(question) > settings.consult_max_text_chars:
        raise bad_request(
            f"the question is longer than {settings.consult_max_text_chars} characters", "messages", "input_too_large"
        )
    talk = [(r, t.strip()) for r, t in said[:-1] if r in ("user", "assistant") and t.strip()]
    history: list[dict[str, str]] = []
    for (r1, t1), (r2, t2) in zip(talk, talk[1:]):
        if r1 == "user" and r2 == "assistant":
            reply = strip_disclaimer(t2, settings)
            history += [{"role": "user", "content": t1}, {"role": "assistant", "content": reply}]
    first = next((t for r, t in said if r == "user" and t.strip()), question)
    return question, history, first


def conversation_key(request: Request, body: ChatIn, user: User, first_question: str) -> tuple[str, str]:
    """(the consultation's title, where the key came from): the client's conversation id, or its first question."""
    named = (body.metadata or {}).get("conversation_id") or request.headers.get("x-conversation-id")
    source = "client" if isinstance(named, str) and named.strip() else "first_message"
    key = named.strip() if source == "client" else first_question.strip()
    digest = hashlib.sha256(f"{user.id}\n{source}\n{key}".encode()).hexdigest()[:40]
    return f"chat:{digest}", source


# ---- the record -------------------------------------------------------------------------------------------
def _open_turn(db: Session, user: User, title: str, question: str, detail: dict[str, Any]) -> Turn:
    """The conversation's consultation (opened when new) and a new chat turn in it, committed and audited."""
    c = db.scalar(
        select(Consultation)
        .where(
            Consultation.owner_id == user.id,
            Consultation.title == title,
            Consultation.status == ConsultationStatus.open,
        )
        .order_by(Consultation.created_at.desc())
        .limit(1)
    )
    if c is None:
        c = Consultation(owner_id=user.id, title=title)
        db.add(c)
        db.flush()
        audit(db, user, "consultation.create", "consultation", c.id, via="openai.chat")
        detail["new_consultation"] = True
    turn_id = new_id()
    for attempt in range(5):
        try:
            index = (db.scalar(select(func.max(Turn.index)).where(Turn.consultation_id == c.id)) or 0) + 1
            turn = Turn(
                id=turn_id,
                consultation_id=c.id,
                index=index,
                status=TurnStatus.queued,
                input_kind="chat",
                question_text=question,
                timings={},
            )
            db.add(turn)
            audit(
                db,
                user,
                "turn.create",
                "turn",
                turn_id,
                consultation_id=c.id,
                index=index,
                input_kind="chat",
                via="openai.chat",
            )
            db.commit()  # before the pipeline starts: the worker must find the row
            detail.update(consultation_id=c.id, index=index)
            return turn
        except IntegrityError:
            db.rollback()  # another turn took this index at the same moment: take the next one
            if attempt == 4:
                raise
            c = db.merge(c)
    raise AssertionError("unreachable")


def _enqueue(db: Session, turn: Turn, history: list[dict[str, str]]) -> None:
    from celery import chain

    from workers.celery_app import celery_app

    first, llm_stage, last = CHAT_STAGES
    try:
        chain(
            celery_app.signature(first, args=({"turn_id": turn.id},)),
            celery_app.signature(llm_stage, kwargs={"history": history}),
            celery_app.signature(last),
        ).apply_async(retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5})
    except Exception as exc:  # noqa: BLE001 - the broker is down: say so, keep the record
        turn.status = TurnStatus.error
        turn.error = f"enqueue: broker_unavailable: {type(exc).__name__}"
        db.commit()
        raise BrokerUnavailable("the pipeline queue is unavailable", {"turn_id": turn.id}) from None


def _outcome(settings: Settings, turn_id: str) -> dict[str, Any]:
    """The finished turn as the record has it: answer, disclaimer, citations, mode, token counts."""
    db = new_session(settings.resolved_database_url)
    try:
        turn = db.get(Turn, turn_id)
        if turn is None:
            raise OpenAIError(500, "the chat turn's record is gone", "internal_error")
        used = set(cited_numbers(turn.answer or ""))
        llm = (turn.timings or {}).get("llm") or {}
        return {
            "answer": turn.answer or "",
            "disclaimer": turn.disclaimer,
            "mode": (turn.verdicts or {}).get("mode"),
            "language": turn.language,
            "prompt_tokens": int(llm.get("prompt_tokens") or 0),
            "completion_tokens": int(llm.get("tokens") or 0),
            "citations": [
                {
                    "n": c.n,
                    "title": c.title,
                    "source": c.source,
                    "score": c.score,
                    "document_id": c.document_id,
                    "chunk_id": c.chunk_id,
                    "cited": c.n in used,
                }
                for c in turn.citations
            ],
        }
    finally:
        db.close()


# ---- following the turn -----------------------------------------------------------------------------------
async def follow(turn_id: str, settings: Settings) -> AsyncIterator[Any]:
    """The turn's events as they come (workers/core/event_schema.py), up to done, error or cancelled; a
    Timeout after consult_sse_timeout_s."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=HEARTBEAT_MS / 1000 + 10)
    key = events.stream_key(turn_id)
    deadline = time.monotonic() + settings.consult_sse_timeout_s
    after = "0-0"
    try:
        while time.monotonic() < deadline:
            got = await r.xread({key: after}, count=100, block=HEARTBEAT_MS)
            for _key, batch in got or []:
                for event_id, fields in batch:
                    after = event_id
                    try:
                        data = json.loads(fields.get("data") or "{}")
                    except ValueError:
                        continue
                    event = decode(fields.get("type") or "", data)
                    if event is None:
                        continue
                    yield event
                    if isinstance(event, (Done, Failed)):
                        return
        yield Timeout(message="the answer did not finish in time")
    finally:
        await r.aclose()


def _failed(event: Any) -> OpenAIError:
    if isinstance(event, Timeout):
        return OpenAIError(504, event.message, "worker_timeout")
    code = event.code or "turn_failed"
    http = event.http_status if isinstance(event.http_status, int) and event.http_status >= 400 else 502
    return OpenAIError(http, event.message or code, code)


class _Call:
    """One call: the audit detail, ended once (log line, `openai.chat` audit event)."""

    def __init__(self, user: User, settings: Settings, body: ChatIn) -> None:
        self.id = "chatcmpl-" + new_id().replace("-", "")
        self.user, self.settings = user, settings
        self.created = int(time.time())
        self.started = time.perf_counter()
        self.turn_id: str | None = None
        self.detail: dict[str, Any] = {"model": body.model, "stream": body.stream, "messages": len(body.messages)}

    def end(self) -> None:
        d = self.detail
        d["took_ms"] = round((time.perf_counter() - self.started) * 1000, 1)
        log.info(
            "openai chat=%s user=%s turn=%s status=%s error=%s mode=%s sentences=%s took=%sms",
            self.id,
            self.user.id,
            self.turn_id,
            d.get("status", 500),
            d.get("error"),
            d.get("mode"),
            d.get("sentences"),
            d["took_ms"],
        )
        db = new_session(self.settings.resolved_database_url)
        try:
            audit_call(db, self.user, "openai.chat", "turn", self.turn_id or self.id, {**d, "completion_id": self.id})
        finally:
            db.close()

    def chunk(self, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if delta is not None else [],
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _usage(out: dict[str, Any]) -> dict[str, int]:
    return {
        "prompt_tokens": out["prompt_tokens"],
        "completion_tokens": out["completion_tokens"],
        "total_tokens": out["prompt_tokens"] + out["completion_tokens"],
    }


@router.post("/completions", response_model=None)
async def create_chat_completion(
    body: ChatIn, request: Request, user: CurrentUser, db: DbSession, settings: AppSettings
) -> Response:
    """Answer the conversation's last question from the knowledge base (OpenAI `chat.completions.create`)."""
    call = _Call(user, settings, body)
    streaming = False
    try:
        question, history, first = parse(body, settings)
        title, source = conversation_key(request, body, user, first)
        call.detail.update(history_turns=len(history) // 2, key=source)
        turn = await run_in_threadpool(_open_turn, db, user, title, question, call.detail)
        call.turn_id = turn.id
        await run_in_threadpool(_enqueue, db, turn, history)
        sep = "" if answer_language(detect_language(question)) == "zh" else " "
        if body.stream:
            streaming = True  # from here the stream ends the call
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                _stream(call, body.model, sep, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        async for event in follow(turn.id, settings):
            if isinstance(event, (Failed, Timeout)):
                raise _failed(event)
        out = await run_in_threadpool(_outcome, settings, turn.id)
        content = out["answer"] + (f"\n\n{out['disclaimer']}" if out["disclaimer"] else "")
        call.detail.update(status=200, mode=out["mode"], citations=len(out["citations"]))
        return JSONResponse(
            {
                "id": call.id,
                "object": "chat.completion",
                "created": call.created,
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": content,
                            "refusal": None,
                            "citations": out["citations"],
                            "disclaimer": out["disclaimer"],
                        },
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": _usage(out),
                "turn_id": turn.id,
                "consultation_id": call.detail.get("consultation_id"),
            }
        )
    except (OpenAIError, MedvoiceError) as exc:
        call.detail.update(failure(exc))
        raise
    finally:
        if not streaming:
            await run_in_threadpool(call.end)


async def _stream(call: _Call, model: str, sep: str, include_usage: bool) -> AsyncIterator[str]:
    """The answer's sentences as chunks, as the llm stage releases them, then the disclaimer and the citations."""
    settings = call.settings
    turn_id = call.turn_id or ""
    finished = False
    sentences = 0
    try:
        yield call.chunk(model, {"role": "assistant", "content": ""})
        async for event in follow(turn_id, settings):
            if isinstance(event, Sentence):
                yield call.chunk(model, {"content": (sep if sentences else "") + event.text})
                sentences += 1
            elif isinstance(event, Restart):
                log.info("openai chat=%s turn=%s: stage %s re-ran mid-stream", call.id, turn_id, event.stage)
            elif isinstance(event, Answered):
                call.detail["mode"] = event.mode
            elif isinstance(event, (Failed, Timeout)):
                finished = not isinstance(event, Timeout)
                raise _failed(event)
            elif isinstance(event, Done):
                finished = True
        out = await run_in_threadpool(_outcome, settings, turn_id)
        if out["disclaimer"]:
            yield call.chunk(model, {"content": f"\n\n{out['disclaimer']}"})
        yield call.chunk(
            model,
            {},
            "stop",
            citations=out["citations"],
            disclaimer=out["disclaimer"],
            turn_id=turn_id,
            consultation_id=call.detail.get("consultation_id"),
        )
        if include_usage:
            yield call.chunk(model, None, usage=_usage(out))
        yield "data: [DONE]\n\n"
        call.detail.update(status=200, sentences=sentences, citations=len(out["citations"]))
    except Exception as exc:  # noqa: BLE001 - the status line has gone: the error is the stream's last event
        err = as_openai(exc)
        call.detail.update(failure(err))
        yield err.sse()
    finally:
        with anyio.CancelScope(shield=True):  # a client that left cancels the stream: the record is still written
            if not finished:
                # The client went away (or gave up): stop generating for nobody; the turn ends `cancelled`.
                with contextlib.suppress(Exception):
                    await run_in_threadpool(events.cancel, turn_id, events.client(settings.redis_url))
                call.detail.setdefault("error", "client_gone")
            await run_in_threadpool(call.end)
