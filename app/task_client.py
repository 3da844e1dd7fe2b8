"""The one way the API and the CLI run a worker task: send it by name, wait for the reply, and turn whatever
goes wrong into a typed error of workers/core/errors.py.

    out = task_client.call("rag.search", {"query": q}, timeout_s=30)              # blocking
    out = await task_client.call_async("asr.transcribe", {...}, timeout_s=600)    # from an async route
    sent = task_client.send("llm.ping", expires_s=5); reply = task_client.wait(sent, 5)   # several at once

What the caller gets instead of a reply:
- the queue (Redis) cannot be reached, to send or to read the reply  → BrokerUnavailable (503)
- no reply within `timeout_s`, or the task expired unstarted          → WorkerTimeout (504)
- the task raised one of our typed errors                            → that error (its own status and code),
                                                                       also when Celery rebuilt it by name
- the task failed any other way                                      → WorkerFailed (502)

A task left waiting in the queue expires when its caller stops waiting (`expires_s` defaults to the wait),
so no worker picks up work nobody reads; a reply read (or failed) is deleted from the result store at once, so
Redis holds no transcript or answer longer than its caller needs it. Only task names, ids and error classes are
logged, never arguments. No model library is imported here: the API process only sends by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workers.core import memory
from workers.core.errors import (
    ERRORS_BY_NAME,
    BrokerUnavailable,
    MedvoiceError,
    WorkerFailed,
    WorkerTimeout,
    from_exception,
)

if TYPE_CHECKING:
    from celery import Celery
    from celery.result import AsyncResult

log = logging.getLogger("medvoice.task_client")


@dataclass
class Sent:
    """A task on its way: its name, Celery's handle on the reply, and when it was sent."""

    name: str
    result: AsyncResult
    sent_at: float = field(default_factory=time.perf_counter)

    @property
    def pool(self) -> str:
        return self.name.split(".", 1)[0]


def _app(app: Celery | None) -> Celery:
    if app is not None:
        return app
    from workers.celery_app import celery_app

    return celery_app


def _wait_text(seconds: float) -> str:
    return f"{seconds:g}s"


def send(
    name: str,
    kwargs: dict[str, Any] | None = None,
    *,
    expires_s: float | None = None,
    priority: int | None = None,
    app: Celery | None = None,
) -> Sent:
    """Queue task `name` with keyword arguments; BrokerUnavailable when the queue cannot be reached. On Redis a
    `priority` of 0 goes first and 9 last, across every queue a worker consumes (kombu's priority lists)."""
    pool = name.split(".", 1)[0]
    try:
        result = _app(app).send_task(name, kwargs=kwargs or {}, expires=expires_s, priority=priority)
    except Exception as exc:  # noqa: BLE001 - kombu/redis raise several kinds; Celery wraps some in RuntimeError
        log.warning("%s could not be queued: %s", name, type(exc).__name__)
        raise BrokerUnavailable(f"the {pool} queue is unavailable", {"task": name, "pool": pool}) from None
    return Sent(name, result)


def _connection_errors() -> tuple[type[BaseException], ...]:
    import kombu.exceptions
    import redis.exceptions

    return (
        ConnectionError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        kombu.exceptions.OperationalError,
    )


def _reply_lost(exc: BaseException, result: AsyncResult) -> bool:
    """Did waiting fail because the result store went away (rather than because the task failed)?"""
    errors = _connection_errors()
    if isinstance(exc, RuntimeError) and isinstance(exc.__cause__, errors):
        return True  # Celery's result consumer gave up reconnecting
    if not isinstance(exc, errors):
        return False
    try:  # a task that itself raised a ConnectionError has a stored, readable failure
        return not result.ready()
    except Exception:  # noqa: BLE001 - the store is unreachable
        return True


def wait(sent: Sent, timeout_s: float) -> Any:
    """The task's reply, or the typed error that says why there is none (see the module's docstring)."""
    from celery.exceptions import TaskRevokedError
    from celery.exceptions import TimeoutError as CeleryTimeout

    details = {"task": sent.name, "pool": sent.pool}
    try:
        reply = sent.result.get(timeout=timeout_s)
    except CeleryTimeout:
        _forget(sent.result)
        raise WorkerTimeout(
            f"the {sent.pool} pool did not answer in {_wait_text(timeout_s)}", {**details, "timeout_s": timeout_s}
        ) from None
    except TaskRevokedError:
        raise WorkerTimeout(
            f"the {sent.pool} pool did not start the task before it expired", {**details, "timeout_s": timeout_s}
        ) from None
    except Exception as exc:  # noqa: BLE001 - typed errors keep their status; anything else is the worker's fault
        if isinstance(exc, MedvoiceError) or type(exc).__name__ in ERRORS_BY_NAME:
            _forget(sent.result)
            raise from_exception(exc) from None
        if _reply_lost(exc, sent.result):
            log.warning("%s task=%s: reply lost: %s", sent.name, sent.result.id, type(exc).__name__)
            raise BrokerUnavailable(
                f"the {sent.pool} queue became unavailable while waiting for the reply", details
            ) from None
        log.warning("%s task=%s failed: %s", sent.name, sent.result.id, type(exc).__name__)
        _forget(sent.result)
        raise WorkerFailed(
            f"the {sent.pool} worker failed ({type(exc).__name__})", {**details, "type": type(exc).__name__}
        ) from None
    # Read once: the reply (a transcript, an answer) leaves the result store now rather than after an hour.
    _forget(sent.result)
    return reply


def _forget(result: AsyncResult) -> None:
    with contextlib.suppress(Exception):  # only tidying up: the timeout is what the caller hears about
        result.forget()


def call(
    name: str,
    kwargs: dict[str, Any] | None = None,
    *,
    timeout_s: float,
    expires_s: float | None = None,
    priority: int | None = None,
    app: Celery | None = None,
    on_sent: Callable[[Sent], None] | None = None,
) -> Any:
    """Send task `name` and wait up to `timeout_s` for its reply (blocking: from a sync route or the CLI).
    `on_sent` is handed the task once it is queued (to revoke it from elsewhere)."""
    sent = send(name, kwargs, expires_s=timeout_s if expires_s is None else expires_s, priority=priority, app=app)
    if on_sent is not None:
        on_sent(sent)
    return wait(sent, timeout_s)


async def call_async(
    name: str,
    kwargs: dict[str, Any] | None = None,
    *,
    timeout_s: float,
    expires_s: float | None = None,
    priority: int | None = None,
    app: Celery | None = None,
    revoke_on_cancel: bool = False,
) -> Any:
    """`call` from async code. The blocking send and wait run in the task client's own threads, so callers that
    wait long for a busy pool (every live session's finals) never take the threads that routes and database
    calls run in. `revoke_on_cancel`: a caller that stops waiting revokes the task, so no worker starts work nobody
    will read."""
    holder: list[Sent] = []
    job = functools.partial(
        call,
        name,
        kwargs,
        timeout_s=timeout_s,
        expires_s=expires_s,
        priority=priority,
        app=app,
        on_sent=holder.append,
    )
    try:
        return await _on_a_waiter(job)
    except asyncio.CancelledError:
        if revoke_on_cancel and holder:
            with contextlib.suppress(Exception):
                holder[0].result.revoke()
        raise


class _Waiters:
    """Daemon threads for async callers' blocking sends and waits. Reused: each keeps its own Celery result
    backend and Redis connections (a thread per call opened two connections a call); one more is made whenever
    all are busy (a wait blocks until its reply, so there is no queue); one unused for IDLE_S ends. Daemon, and
    not a concurrent.futures pool, which the interpreter joins at exit: a wait given up on never keeps
    `medvoice serve` from stopping."""

    IDLE_S = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue] = []

    def run(self, job: Callable[[], None]) -> None:
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name="task-wait", daemon=True).start()
        inbox.put(job)

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        while True:
            try:
                job = inbox.get(timeout=self.IDLE_S)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:
                        self._idle.remove(inbox)
                        return
                continue  # taken off the idle list just now: its job is on the way
            job()
            with self._lock:
                self._idle.append(inbox)


_WAITERS = _Waiters()


async def _on_a_waiter(fn: Callable[[], Any]) -> Any:
    """fn() on one of the waiter threads (not the routes' thread pool, which a busy pool's waiters would fill).
    A caller that is cancelled stops awaiting at once; the thread is free again when its wait ends."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if done.cancelled():
            return
        if exc is None:
            done.set_result(result)
        else:
            done.set_exception(exc)

    def run() -> None:
        try:
            result, exc = fn(), None
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting coroutine
            result, exc = None, error
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: no one awaits it
            loop.call_soon_threadsafe(settle, result, exc)
        # Live sessions pass audio through here many times a second (base64 out, results back), from many
        # threads: glibc keeps what they freed in per-thread arenas unless told to give it back (throttled; here,
        # off the event loop).
        memory.trim()

    _WAITERS.run(run)
    return await done
