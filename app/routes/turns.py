"""Consultation turns over REST: submit audio or text, read the turn, fetch the reply audio, follow its events.

POST /v1/consultations/{id}/turns   multipart `file` (audio) or JSON {"text": ...} → 202 {turn_id, ...};
                                    optional `language` ("en", "zh", ...) forces ASR and answer language
GET  /v1/turns/{id}                 the turn: status, transcript, answer, citations, timings
GET  /v1/turns/{id}/audio           the reply WAV (409 while the turn is still running)
GET  /v1/turns/{id}/events          Server-Sent Events from the turn's Redis stream, ending at done/error/cancelled;
                                    a bearer token, or `?ticket=` for a browser's EventSource
POST /v1/turns/{id}/events/ticket   a short-lived single-use ticket for that stream (tickets.mint, "turn-events")
POST /v1/turns/{id}/cancel          stop a running turn (its owner): it ends `error` with turn_cancelled

The upload is decoded here (app/audio.py, PyAV only) before anything is stored or recorded, so bad input
gets a 4xx and leaves no row and no file. The pipeline is sent by task name (workers.pipeline.STAGES: the
chain of signatures, without importing an engine); its events are those of workers/core/event_schema.py. A
clinician sees only turns of their own consultations (404 otherwise); an admin may read any; every read and
write is audited.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from app import tickets
from app.audio import AudioInfo, extension_of, validate_audio
from app.audit import audit
from app.deps import AppSettings, AuthError, CurrentUser, DbSession, active_user, authenticate, oauth2_scheme
from app.routes.consultations import TurnOut, load_consultation, turn_out
from app.uploads import MULTIPART_OVERHEAD, body_limited, read_upload, store_upload
from workers.core import events
from workers.core.errors import BrokerUnavailable, EmptyInput, InputError, InputTooLarge, MedvoiceError
from workers.core.event_schema import TERMINAL, Done, Failed, Timeout, decode
from workers.core.records import ConsultationStatus, Role, Turn, TurnStatus, User, new_id
from workers.core.refs import resolve_ref, to_ref
from workers.core.settings import Settings
from workers.pipeline import STAGES

log = logging.getLogger("medvoice.api.turns")
router = APIRouter(tags=["turns"])


def http_error(exc: MedvoiceError) -> HTTPException:
    payload = exc.to_payload()
    payload.pop("http_status", None)
    return HTTPException(status_code=exc.http_status, detail=payload)


def load_turn(db: Session, user: User, turn_id: str) -> Turn:
    """The turn if this user may see it (owner of its consultation, or admin); 404 otherwise."""
    turn = db.get(Turn, turn_id)
    if turn is None or (turn.consultation.owner_id != user.id and user.role != Role.admin):
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="turn not found")
    return turn


# ---- submit ---------------------------------------------------------------------------------------------
def _language(value: Any) -> str | None:
    """An optional language code ("en", "zh", ...): forces ASR's language and the answer's."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[a-z]{2,3}", value.strip().lower()):
        raise InputError('"language" must be a language code such as "en" or "zh"', {"field": "language"})
    return value.strip().lower()


async def _parse_body(request: Request, settings: Settings) -> dict[str, Any]:
    """{"kind": "audio", "data", "filename"} or {"kind": "text", "text"}; typed errors for bad input."""
    ctype = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    length = request.headers.get("content-length")
    if ctype == "multipart/form-data":
        if length and length.isdigit() and int(length) > settings.consult_max_audio_bytes + MULTIPART_OVERHEAD:
            raise InputTooLarge(
                f"audio larger than the limit of {settings.consult_max_audio_bytes} bytes",
                {"max_bytes": settings.consult_max_audio_bytes},
            )
        try:
            form = await body_limited(request, settings.consult_max_audio_bytes + MULTIPART_OVERHEAD).form(
                max_files=1, max_fields=8
            )
        except InputTooLarge:
            raise
        except Exception as exc:  # noqa: BLE001 - starlette raises for malformed or too many parts
            raise InputError(
                f"malformed multipart body: {getattr(exc, 'detail', None) or type(exc).__name__}", {"field": "file"}
            ) from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InputError("multipart upload needs the audio in a part named 'file'", {"field": "file"})
            extension_of(upload.filename, settings)  # 415 before reading the upload of an unsupported format
            data = await read_upload(upload, settings.consult_max_audio_bytes)
            return {
                "kind": "audio",
                "data": data,
                "filename": upload.filename,
                "language": _language(form.get("language")),
            }
        finally:
            await form.close()  # the spooled temporary files go now, on every path
    if ctype == "application/json":
        if length and length.isdigit() and int(length) > 16 * settings.consult_max_text_chars + 1024:
            raise InputTooLarge("JSON body too large", {"max_chars": settings.consult_max_text_chars})
        raw = await request.body()
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError("the JSON body is not valid UTF-8", {"field": "body"}) from None
        except json.JSONDecodeError as exc:
            raise InputError(
                f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", {"field": "body"}
            ) from None
        if not isinstance(body, dict) or set(body) - {"text", "language"}:
            raise InputError('the JSON body must be {"text": "<question>", "language"?: "en"}', {"field": "body"})
        text = body.get("text")
        if not isinstance(text, str):
            raise InputError('"text" must be a string', {"field": "text"})
        if not text.strip():
            raise EmptyInput('"text" is empty', {"field": "text"})
        if len(text) > settings.consult_max_text_chars:
            raise InputTooLarge(
                f'"text" longer than {settings.consult_max_text_chars} characters',
                {"max_chars": settings.consult_max_text_chars},
            )
        return {"kind": "text", "text": text.strip(), "language": _language(body.get("language"))}
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        {
            "code": "unsupported_media_type",
            "message": "send multipart/form-data with an audio 'file', or application/json {\"text\": ...}",
        },
    )


def create_turn_record(db: Session, user: User, settings: Settings, consultation_id: str, body: dict[str, Any]) -> Turn:
    """The turn row (and its stored audio) for a question; the caller sends the pipeline. Used by REST and live."""
    c = load_consultation(db, user, consultation_id)
    if c.owner_id != user.id:
        # Admins read others' records; only the owning clinician adds to a consultation.
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the consultation's owner may add turns")
    if c.status != ConsultationStatus.open:
        raise HTTPException(status.HTTP_409_CONFLICT, "the consultation is closed")
    turn_id = new_id()
    info: AudioInfo | None = None
    path: Path | None = None
    if body["kind"] == "audio":
        info = validate_audio(body["data"], body["filename"], settings)
        path = store_upload(settings.audio_dir / "in" / c.id / f"{turn_id}.{info.extension}", body["data"])
    try:
        for attempt in range(5):
            try:
                index = (db.scalar(select(func.max(Turn.index)).where(Turn.consultation_id == c.id)) or 0) + 1
                turn = Turn(
                    id=turn_id,
                    consultation_id=c.id,
                    index=index,
                    status=TurnStatus.queued,
                    input_kind=body["kind"],
                    audio_ref=to_ref(settings, path) if path else None,
                    question_text=body.get("text"),
                    language=body.get("language"),
                    timings={
                        "input": {
                            "audio_s": info.duration_s,
                            "bytes": info.bytes,
                            "codec": info.codec,
                            "sample_rate": info.sample_rate,
                        }
                    }
                    if info
                    else {},
                )
                db.add(turn)
                # (any attribute load below may autoflush the new row: all of it stays inside this try)
                audit(
                    db,
                    user,
                    "turn.create",
                    "turn",
                    turn_id,
                    consultation_id=c.id,
                    index=index,
                    input_kind=body["kind"],
                    **({"audio_s": info.duration_s, "bytes": info.bytes} if info else {}),
                )
                db.commit()  # before the pipeline starts: the worker must find the row
                return turn
            except IntegrityError:
                db.rollback()  # another turn took this index at the same moment: take the next one
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")
    except BaseException:
        if path is not None:
            path.unlink(missing_ok=True)
        raise


def turn_chain(  # noqa: ANN201 - a chain
    turn_id: str, stages: tuple[str, ...], first_queue: str | None = None, first_state: dict[str, Any] | None = None
):
    """These stages of the pipeline (workers.pipeline.STAGES) by task name; `first_queue` sends the first stage
    to another queue (a live utterance's transcript goes to the live pool), `first_state` adds to its input."""
    from celery import chain

    from workers.celery_app import celery_app

    first, *rest = stages
    state = {**(first_state or {}), "turn_id": turn_id}
    head = celery_app.signature(first, args=(state,), **({"queue": first_queue} if first_queue else {}))
    return chain(head, *(celery_app.signature(name) for name in rest))


def stages_for(input_kind: str) -> tuple[str, ...]:
    """Every stage for audio; a typed question skips asr.turn."""
    return STAGES if input_kind == "audio" else STAGES[1:]


def enqueue(
    db: Session,
    turn: Turn,
    stages: tuple[str, ...] | None = None,
    first_queue: str | None = None,
    first_state: dict[str, Any] | None = None,
) -> None:
    """Send the turn's pipeline; BrokerUnavailable (the turn recorded as error) when the queue is down."""
    try:
        turn_chain(turn.id, stages or stages_for(turn.input_kind), first_queue, first_state).apply_async(
            retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5}
        )
    except Exception as exc:  # noqa: BLE001 - the broker is down: say so, keep the record
        turn.status = TurnStatus.error
        turn.error = f"enqueue: broker_unavailable: {type(exc).__name__}"
        db.commit()
        log.warning("turn=%s could not be queued: %s", turn.id, type(exc).__name__)
        raise BrokerUnavailable("the pipeline queue is unavailable", {"turn_id": turn.id}) from None


@router.post("/v1/consultations/{consultation_id}/turns", status_code=status.HTTP_202_ACCEPTED)
async def create_turn(
    consultation_id: str, request: Request, response: Response, user: CurrentUser, db: DbSession, settings: AppSettings
) -> dict[str, Any]:
    # Ownership first: no upload is read for someone else's (or an unknown) consultation.
    await run_in_threadpool(load_consultation, db, user, consultation_id)
    await run_in_threadpool(db.rollback)  # hold no read transaction open while the upload is read and decoded
    try:
        body = await _parse_body(request, settings)
        turn = await run_in_threadpool(create_turn_record, db, user, settings, consultation_id, body)
    except MedvoiceError as exc:
        log.info("turn rejected for consultation=%s: %s", consultation_id, exc.code)
        raise http_error(exc) from None
    await run_in_threadpool(enqueue, db, turn)
    log.info("turn=%s queued consultation=%s index=%d kind=%s", turn.id, consultation_id, turn.index, turn.input_kind)
    response.headers["Location"] = f"/v1/turns/{turn.id}"
    return {
        "turn_id": turn.id,
        "consultation_id": consultation_id,
        "index": turn.index,
        "status": turn.status.value,
        "input_kind": turn.input_kind,
        "links": {
            "turn": f"/v1/turns/{turn.id}",
            "events": f"/v1/turns/{turn.id}/events",
            "audio": f"/v1/turns/{turn.id}/audio",
            "consultation": f"/v1/consultations/{consultation_id}",
        },
    }


# ---- read -----------------------------------------------------------------------------------------------
@router.get("/v1/turns/{turn_id}", response_model=TurnOut)
def get_turn(turn_id: str, user: CurrentUser, db: DbSession) -> TurnOut:
    turn = load_turn(db, user, turn_id)
    audit(
        db,
        user,
        "turn.read",
        "turn",
        turn.id,
        consultation_id=turn.consultation_id,
        owner_id=turn.consultation.owner_id,
    )
    db.commit()
    return turn_out(turn)


@router.get("/v1/turns/{turn_id}/audio", response_class=FileResponse)
def get_turn_audio(turn_id: str, user: CurrentUser, db: DbSession, settings: AppSettings) -> FileResponse:
    turn = load_turn(db, user, turn_id)
    audit(
        db,
        user,
        "turn.audio",
        "turn",
        turn.id,
        consultation_id=turn.consultation_id,
        owner_id=turn.consultation.owner_id,
    )
    db.commit()
    if turn.status not in (TurnStatus.done, TurnStatus.error):
        raise HTTPException(status.HTTP_409_CONFLICT, f"the turn is still {turn.status.value}; no reply audio yet")
    if not turn.reply_audio_ref:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this turn has no reply audio")
    try:
        path = resolve_ref(settings, turn.reply_audio_ref)
    except MedvoiceError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the reply audio file is gone") from None
    return FileResponse(path, media_type="audio/wav", filename=f"turn-{turn.id}.wav")


@router.post("/v1/turns/{turn_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
def cancel_turn(turn_id: str, user: CurrentUser, db: DbSession, settings: AppSettings) -> dict[str, Any]:
    turn = load_turn(db, user, turn_id)
    if turn.consultation.owner_id != user.id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the consultation's owner may cancel its turns")
    if turn.status in (TurnStatus.done, TurnStatus.error):
        raise HTTPException(status.HTTP_409_CONFLICT, f"the turn is already {turn.status.value}")
    events.cancel(turn.id, r=events.client(settings.redis_url))
    audit(db, user, "turn.cancel", "turn", turn.id, consultation_id=turn.consultation_id)
    db.commit()
    return {"turn_id": turn.id, "status": "cancelling"}


def _sse(event_id: str | None, type_: str, data: dict[str, Any]) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {type_}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _sse_event(event_id: str | None, event: Any) -> str:
    return _sse(event_id, event.type.value, event.data())


async def _event_stream(
    turn_id: str, after: str, final: tuple[str, str | None] | None, settings: Settings
) -> AsyncIterator[str]:
    """Replay the turn's stream after `after`, then follow it until done/error or the timeout.

    Async (redis.asyncio): a waiting client holds no thread, and a client that goes away cancels it.
    """
    import redis.asyncio as aioredis

    # XREAD blocks for a heartbeat; redis-py's default socket timeout (5 s) would cut a longer one off.
    r = aioredis.Redis.from_url(
        settings.redis_url, decode_responses=True, socket_timeout=settings.consult_sse_heartbeat_s + 10
    )
    key = events.stream_key(turn_id)
    deadline = time.monotonic() + settings.consult_sse_timeout_s
    heartbeat_ms = int(settings.consult_sse_heartbeat_s * 1000)
    try:
        yield "retry: 2000\n\n"
        seen_any = False
        while time.monotonic() < deadline:
            try:
                got = await r.xread({key: after}, count=100, block=heartbeat_ms)
            except redis.RedisError:
                # Redis gone: say so rather than cut the response off; the turn's record is in SQL and its
                # stream resumes from Last-Event-ID once Redis is back.
                yield _sse_event(
                    None,
                    Failed(
                        code=BrokerUnavailable.code,
                        message="the event stream (Redis) is unavailable: reconnect with Last-Event-ID",
                        http_status=BrokerUnavailable.http_status,
                        source="stream",
                    ),
                )
                return
            entries = [entry for _key, batch in got or [] for entry in batch]
            if not entries:
                if final is not None and not seen_any:
                    # Finished, and its stream expired (or it never had one): the record says how it ended.
                    status_, error = final
                    yield _sse_event(
                        None,
                        Done(status=status_, source="record")
                        if status_ == "done"
                        else Failed(status=status_, message=error, source="record"),
                    )
                    return
                yield ": keep-alive\n\n"
                continue
            for event_id, fields in entries:
                seen_any = True
                after = event_id
                type_ = fields.get("type") or "message"
                try:
                    data = json.loads(fields.get("data") or "{}")
                except ValueError:
                    data = {}
                event = decode(type_, data)
                # An event this version does not know (written by a newer worker) passes through as it is.
                yield _sse_event(event_id, event) if event is not None else _sse(event_id, type_, data)
                if type_ in TERMINAL:
                    return
        yield _sse_event(None, Timeout(message="the event stream ended before the turn finished"))
    finally:
        await r.aclose()


EVENTS_TICKET_PURPOSE = "turn-events"


@router.post("/v1/turns/{turn_id}/events/ticket")
def turn_events_ticket(turn_id: str, user: CurrentUser, db: DbSession, settings: AppSettings) -> dict[str, Any]:
    """A single-use ticket for this turn's event stream, for a browser's EventSource (it cannot send an
    Authorization header): GET the events URL with `?ticket=` within events_ticket_ttl_s."""
    turn = load_turn(db, user, turn_id)
    try:
        ticket = tickets.mint(
            events.client(settings.redis_url),
            user.id,
            EVENTS_TICKET_PURPOSE,
            settings.events_ticket_ttl_s,
            {"turn_id": turn.id},
        )
    except redis.RedisError:
        raise http_error(BrokerUnavailable("the ticket store (Redis) is unavailable", {"turn_id": turn.id})) from None
    audit(db, user, "turn.events_ticket", "turn", turn.id, consultation_id=turn.consultation_id)
    db.commit()
    return {
        "ticket": ticket,
        "expires_in": settings.events_ticket_ttl_s,
        "events": f"/v1/turns/{turn.id}/events?ticket={ticket}",
    }


def _events_user(turn_id: str, token: str | None, ticket: str | None, db: Session, settings: Settings) -> User:
    """The bearer token's user, or a ticket's (consumed here): minted for this turn's events, and its user
    still active and not revoked since it was minted."""
    try:
        if ticket is None:
            return authenticate(token, db, settings)
        try:
            held = tickets.redeem(events.client(settings.redis_url), ticket, EVENTS_TICKET_PURPOSE)
        except redis.RedisError:
            raise http_error(BrokerUnavailable("the ticket store (Redis) is unavailable", {})) from None
        if held is None:
            raise AuthError("the ticket is unknown, used or expired; mint a new one")
        if held.scope.get("turn_id") != turn_id:
            raise AuthError("the ticket was minted for another turn")
        return active_user(db, held.user_id, issued=datetime.fromtimestamp(held.issued_at, UTC))
    except AuthError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


@router.get("/v1/turns/{turn_id}/events")
def turn_events(
    turn_id: str,
    request: Request,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    db: DbSession,
    settings: AppSettings,
    ticket: Annotated[
        str | None, Query(description="a single-use ticket from POST …/events/ticket, instead of the header")
    ] = None,
) -> StreamingResponse:
    user = _events_user(turn_id, token, ticket, db, settings)
    turn = load_turn(db, user, turn_id)
    audit(
        db,
        user,
        "turn.events",
        "turn",
        turn.id,
        consultation_id=turn.consultation_id,
        owner_id=turn.consultation.owner_id,
    )
    db.commit()
    after = request.headers.get("last-event-id") or request.query_params.get("after") or "0-0"
    if not _valid_stream_id(after):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "Last-Event-ID must be a stream id such as 0-0")
    final = (turn.status.value, turn.error) if turn.status in (TurnStatus.done, TurnStatus.error) else None
    return StreamingResponse(
        _event_stream(turn.id, after, final, settings),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _valid_stream_id(value: str) -> bool:
    head, _, tail = value.partition("-")
    return head.isdigit() and (tail == "" or tail.isdigit()) and len(value) <= 40
