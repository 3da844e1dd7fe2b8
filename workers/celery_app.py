"""The Celery application: one queue per pool (asr, rag, llm, tts), routed by task-name prefix.

The API sends work by task name only (`send_task("asr.transcribe", ...)`), so importing this module
never loads a model: engines are loaded per worker process at `worker_process_init` (workers/engines).
"""

from __future__ import annotations

from importlib import import_module

from celery import Celery
from celery.app import trace
from celery.signals import (
    setup_logging,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)
from kombu import Queue

from workers import metrics
from workers.core import logs, memory
from workers.core.settings import POOLS, get_settings

# House rule: no transcript, answer or document text at INFO. Celery logs each task's return value on
# success by default; keep the id and runtime only (read at call time, so once per process suffices).
trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"

# A pool's stage (workers/pipeline/), which its tasks import inside their bodies: the parent stays small.
STAGE_MODULES = {pool: f"workers.pipeline.{pool}" for pool in ("asr", "rag", "llm", "tts")}

TASK_MODULES = [
    "workers.tasks.ping",
    "workers.tasks.rag",
    "workers.tasks.asr",
    "workers.tasks.live",
    "workers.tasks.embed",
    "workers.tasks.llm",
    "workers.tasks.tts",
    "workers.tasks.turns",
    "workers.tasks.chat",
    "workers.tasks.prefill",
]


def make_celery() -> Celery:
    s = get_settings()
    app = Celery("medvoice", broker=s.redis_url, backend=s.redis_url, include=TASK_MODULES)
    app.conf.update(
        task_queues=[Queue(pool, routing_key=pool) for pool in POOLS],
        task_default_queue="rag",
        task_routes=[{f"{pool}.*": {"queue": pool, "routing_key": pool}} for pool in POOLS],
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # A task is acknowledged only after it ran, and re-queued if its worker process dies mid-task;
        # with prefetch 1 a busy model worker never hoards jobs another process could start.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A child loads its models (worker_process_init) before it reports up: Celery's 4 s default killed every
        # replacement child of a killed one in a loop.
        worker_proc_alive_timeout=max(60.0, s.task_soft_time_limit_s / 2),
        task_time_limit=s.task_time_limit_s,
        task_soft_time_limit=s.task_soft_time_limit_s,
        task_track_started=True,
        # A result is the reply only: a live final's arguments carry the speaker's audio, which the result store
        # (and Redis's append-only file) must not keep for result_expires. Callers delete a reply once read.
        result_expires=3600,
        # Flower sees workers and tasks through these events.
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        # Must exceed the longest task, or Redis re-delivers an unacknowledged task to a second worker.
        broker_transport_options={"visibility_timeout": max(3600, 2 * s.task_time_limit_s)},
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    return app


celery_app = make_celery()


# A pool is ready only once a child has its model loaded: `/readyz` reads this Redis set per node.
ENGINES_READY_PREFIX = "medvoice:engines-ready:"


def _redis():  # noqa: ANN202
    import redis

    return redis.Redis.from_url(get_settings().redis_url)


@worker_init.connect
def _forget_old_readiness(sender=None, **_: object) -> None:  # noqa: ANN001
    # Runs in the worker's parent before it forks: children inherit the node name through the env.
    import os

    os.environ["MEDVOICE_WORKER_NAME"] = sender.hostname
    _redis().delete(ENGINES_READY_PREFIX + sender.hostname)


@worker_process_init.connect
def _load_engines(**_: object) -> None:
    # Runs in each pool child after fork: models are never loaded in the parent and shared by fork.
    import os

    from workers import engines

    pools = engines.served_pools()
    engines.load_for_pools(pools)
    for pool in pools:  # what the pool's tasks import (and read) on first use, before the child reports ready
        if pool in STAGE_MODULES:
            stage = import_module(STAGE_MODULES[pool])
            if hasattr(stage, "prepare"):
                stage.prepare()
    memory.trim(force=True)  # what loading read and threw away
    metrics.models_loaded(engines.loaded())
    node = os.environ.get("MEDVOICE_WORKER_NAME")
    if node:
        key = ENGINES_READY_PREFIX + node
        r = _redis()
        r.sadd(key, os.getpid())
        r.expire(key, 7 * 24 * 3600)


@worker_shutdown.connect
def _clear_readiness(sender=None, **_: object) -> None:  # noqa: ANN001
    if sender is not None:
        _redis().delete(ENGINES_READY_PREFIX + sender.hostname)


# Logs: Celery's own loggers and ours through one handler (workers/core/logs.py), one line per event, text or
# JSON by MEDVOICE_LOG_FORMAT; while a task runs its lines carry its task id and, when its state names one, the
# turn id. Connecting setup_logging makes Celery leave the logging set-up to us.
@setup_logging.connect
def _setup_logging(loglevel=None, **_: object) -> None:  # noqa: ANN001
    s = get_settings()
    logs.configure(loglevel or s.log_level, s.log_format)


def _turn_of(args: object, kwargs: object) -> str | None:
    if isinstance(kwargs, dict) and isinstance(kwargs.get("turn_id"), str):
        return kwargs["turn_id"]
    for arg in args if isinstance(args, (list, tuple)) else ():
        if isinstance(arg, dict) and isinstance(arg.get("turn_id"), str):
            return arg["turn_id"]
    return None


_bound: dict[str, object] = {}  # task id → its logging context token (prerun to postrun, same process)


@task_prerun.connect
def _bind_task_ids(task_id=None, args=None, kwargs=None, **_: object) -> None:  # noqa: ANN001
    _bound[task_id] = logs.bind_token(task_id=task_id, turn_id=_turn_of(args, kwargs))
    metrics.task_started(task_id)


@task_postrun.connect
def _unbind_task_ids(task_id=None, task=None, state=None, **_: object) -> None:  # noqa: ANN001
    metrics.task_finished(task, task_id, state)
    token = _bound.pop(task_id, None)
    if token is not None:
        logs.unbind(token)
    memory.trim()


# Per-task metrics (workers/metrics.py): failures and retries; a child that exits is marked dead so its live
# figures leave the node's sum (its counters stay).
@task_failure.connect
def _count_failure(sender=None, exception=None, **_: object) -> None:  # noqa: ANN001
    metrics.task_failed(sender, exception)


@task_retry.connect
def _count_retry(sender=None, **_: object) -> None:  # noqa: ANN001
    metrics.task_retried(sender)


@worker_process_shutdown.connect
def _child_exited(pid=None, **_: object) -> None:  # noqa: ANN001
    import os

    metrics.child_exited(pid or os.getpid())
