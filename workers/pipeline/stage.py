"""What every stage does around its own work, in one place: `run`.

- the state it receives is checked (`Contract.from_state`); a state marked skipped is passed on untouched;
- `enter`: the turn moves to the stage's status in SQL (a turn already done or error is left alone: the stage
  is skipped; a turn whose cancel flag is set stops here), a re-run stage first appends `restart` so clients
  drop its earlier events, then a `status` event;
- the stage function runs with a `Context` (whether it is a re-run, whether it runs in-process, its clock);
- a transient broker or database error is retried (settings.consult_stage_retries, backing off), anything
  else marks the turn `error` with "<stage>: <code>: <reason>" and ends the stream with `error` (or
  `cancelled`), and is raised again for Celery.

Every stage write is idempotent (fields overwritten, citations replaced, files replaced atomically), so a
retried or re-delivered stage never duplicates rows. Logs carry ids, codes and timings only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import celery.exceptions
import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc

from workers import metrics
from workers.core import events
from workers.core.db import session_scope
from workers.core.errors import EngineFailure, InputError, TurnCancelled, from_exception
from workers.core.event_schema import Cancelled, EventType, Failed, Restart, Status, Timings
from workers.core.records import Turn, TurnStatus
from workers.core.settings import get_settings
from workers.pipeline.contracts import Skipped, Spoken, State

log = logging.getLogger("medvoice.tasks.turns")

TRANSIENT = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    sqlalchemy.exc.OperationalError,
)
FINISHED = (TurnStatus.done, TurnStatus.error)


class StageSkipped(Exception):
    """The turn is already finished (done or error): a late or re-delivered stage does nothing."""


class Contract(Protocol):
    turn_id: str

    def to_state(self) -> State: ...


C = TypeVar("C")


@dataclass
class Context:
    """What a stage function may ask of the run around it."""

    stage: str
    rerun: bool = False  # this stage ran for the turn before (a re-delivery, a retry after its events)
    in_process: bool = False  # called as a plain function (no worker): fan-outs run here, one after another
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 4)


@dataclass(frozen=True)
class FanOut:
    """The stage hands its work to a Celery canvas (a long recording's pieces): the task replaces itself."""

    turn_id: str
    canvas: Any

    def to_state(self) -> State:  # never sent: the task is replaced
        raise RuntimeError("a fan-out replaces its task")


def db_url() -> str:
    return get_settings().resolved_database_url


def begin(turn_id: str, status: TurnStatus) -> Turn:
    """Move the turn to this stage's status; a detached copy of the row for reading."""
    with session_scope(db_url()) as db:
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


def announce_rerun(turn_id: str, stage: str, types: tuple[EventType, ...], status: TurnStatus) -> bool:
    """A re-delivered stage streams its events again: a `restart` event tells clients to drop the earlier ones.

    It ran before if the stream holds one of its result events, or its own `status` event: a worker killed
    mid-stage (before its results) leaves only that, and the stream still says the stage started over."""
    rerun = any(
        e.get("type") in types or (e.get("type") == EventType.status and e.get("status") == status.value)
        for e in events.read_all(turn_id)
    )
    if rerun:
        events.emit(turn_id, Restart(stage=stage))
    return rerun


def record(turn_id: str, stage: str, timing: Timings, **fields: Any) -> None:
    """The stage's result fields and its timing on the turn."""
    with session_scope(db_url()) as db:
        turn = db.get(Turn, turn_id)
        if turn is None:
            raise InputError("no such turn", {"turn_id": turn_id})
        for name, value in fields.items():
            setattr(turn, name, value)
        turn.timings = {**(turn.timings or {}), stage: timing}  # a new dict: JSON columns track assignment
    metrics.stage_recorded(stage, timing, fields)


def fail(turn_id: str, stage: str, exc: BaseException) -> None:
    err = from_exception(exc)
    reason = f"{stage}: {err.code}: {err.message or type(exc).__name__}"
    try:
        with session_scope(db_url()) as db:
            turn = db.get(Turn, turn_id)
            if turn is not None and turn.status != TurnStatus.done:
                turn.status = TurnStatus.error
                turn.error = reason[:2000]
    except Exception:
        log.exception("turn=%s could not record the %s failure", turn_id, stage)
    try:
        # A client's stop ends the stream with `cancelled`; anything else with `error`.
        kind = Cancelled if isinstance(err, TurnCancelled) else Failed
        metrics.turn_ended("cancelled" if kind is Cancelled else "error", "" if kind is Cancelled else err.code)
        events.emit(turn_id, kind(stage=stage, code=err.code, message=err.message, http_status=err.http_status))
    except Exception:
        log.exception("turn=%s could not publish the %s failure", turn_id, stage)
    log.warning("turn=%s stage=%s failed: %s", turn_id, stage, err.code)


def run(
    task: Any,
    stage: str,
    state: Any,
    read: Callable[[Any], C],
    work: Callable[[Turn | None, C, Context], Any],
    status: TurnStatus | None = None,
    rerun_types: tuple[EventType, ...] = (),
) -> State:
    """One stage as a Celery task body: `read` checks the state into its contract, `work` does the stage's job
    on the turn (moved to `status` first, when given) and returns the next contract."""
    if isinstance(state, dict) and state.get("skipped"):
        return state
    turn_id = events.check_turn_id(state.get("turn_id") or "") if isinstance(state, dict) else ""
    # The stage's duration and outcome: the stage tasks proper (not a long recording's pieces and join).
    timed = status is not None or stage == "finish"
    started = time.perf_counter()
    outcome = "error"
    try:
        contract = read(state)
        turn_id = contract.turn_id  # type: ignore[attr-defined]
        ctx = Context(stage, in_process=bool(task.request.called_directly))
        turn = None
        if status is not None:
            turn = begin(turn_id, status)
            ctx.rerun = announce_rerun(turn_id, stage, rerun_types, status)
            events.emit(turn_id, Status(status=status.value))
        out = work(turn, contract, ctx)
        if isinstance(out, FanOut):
            timed = False
            raise task.replace(out.canvas)
        outcome = "ok"
        if isinstance(out, Spoken):  # the last stage: tts, or finish for a turn that is read
            metrics.turn_ended("done")
            if turn is not None:
                metrics.first_audio(turn_id, turn.created_at, turn.input_kind)
        return out.to_state()
    except celery.exceptions.Ignore:
        raise  # the task replaced itself (a long recording's pieces): not a failure
    except StageSkipped as exc:
        outcome = "skipped"
        log.info("turn=%s stage=%s skipped: turn already %s", turn_id, stage, exc)
        return Skipped(turn_id).to_state()
    except TRANSIENT as exc:
        retries = get_settings().consult_stage_retries
        # A database error's text carries the statement's parameters (a transcript, an answer): Celery logs
        # what it is given, so it gets a typed error naming the class only.
        plain = EngineFailure(f"transient {type(exc).__name__}", {"type": type(exc).__name__})
        if task.request.called_directly or task.request.retries >= retries:
            fail(turn_id, stage, EngineFailure(f"{type(exc).__name__} after {retries} retries"))
            raise plain from None
        outcome = "retry"
        log.warning(
            "turn=%s stage=%s transient %s, retry %d/%d",
            turn_id,
            stage,
            type(exc).__name__,
            task.request.retries + 1,
            retries,
        )
        raise task.retry(exc=plain, countdown=min(2**task.request.retries, 10)) from None
    except BaseException as exc:
        if isinstance(exc, TurnCancelled):
            outcome = "cancelled"
        if turn_id:
            fail(turn_id, stage, exc)
        raise
    finally:
        if timed:
            metrics.stage_ran(stage, outcome, time.perf_counter() - started)
