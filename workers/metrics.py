"""Product metrics of the worker pools (`medvoice_*`), and each worker node's /metrics endpoint.

Celery runs the stages in prefork children, so a node uses prometheus_client's multiprocess mode:
`medvoice worker` points PROMETHEUS_MULTIPROC_DIR at a folder of its own (emptied at start, before this
module is imported anywhere in the node), every child writes its figures there, the parent serves the sum on
MEDVOICE_WORKER_METRICS_PORT, and a child that exits is marked dead. Counters and histograms of a child that
was replaced stay in the sum, so the figures survive child restarts. Prometheus labels each node's target
with its pool (deploy/prometheus/prometheus.yml).

Labels carry stage, task and queue names, outcomes and error codes only: never text, never user names.
Everything here is best effort: a metric never fails a stage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

from prometheus_client import Counter, Histogram

log = logging.getLogger("medvoice.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: a stage is tens of milliseconds (rag) to minutes (a long recording's asr on a busy CPU).
STAGE_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 60)

TURNS = Counter(
    "medvoice_turns_total",
    "Turns that ended, by outcome (done, error, cancelled, stalled) and error code ('' when done)",
    ["outcome", "code"],
)
STAGE_SECONDS = Histogram(
    "medvoice_stage_duration_seconds",
    "One pipeline stage of a turn (asr, rag, llm, tts, finish), by outcome (ok, error, cancelled, skipped, retry)",
    ["stage", "outcome"],
    buckets=STAGE_BUCKETS,
)
LLM_PROMPT_EVAL_SECONDS = Histogram(
    "medvoice_llm_prompt_eval_seconds",
    "llm stage: prompt evaluation, up to the first generated token",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
LLM_DECODE_SECONDS = Histogram(
    "medvoice_llm_decode_seconds",
    "llm stage: token generation after the first token",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
LLM_TOKENS = Counter("medvoice_llm_tokens_total", "Tokens the llm stage evaluated or generated", ["kind"])
FIRST_AUDIO_SECONDS = Histogram(
    "medvoice_turn_first_audio_seconds",
    "Turn created (upload or text accepted) → the first audio clip of its reply on the turn's stream",
    ["input"],
    buckets=LATENCY_BUCKETS,
)
ANSWERS = Counter(
    "medvoice_answers_total",
    "Answers by mode: generated, quoted, no_answer (the knowledge base has none), unverified, ...",
    ["mode"],
)
CLAIM_CHECK = Counter(
    "medvoice_claim_check_firings_total",
    "Answer sentences the claim check or numbers guard replaced by the passage, or dropped",
    ["action"],
)
TASK_SECONDS = Histogram(
    "medvoice_task_runtime_seconds",
    "Celery task runtime in a worker child, by task name, queue and state (SUCCESS, FAILURE, RETRY, ...)",
    ["task", "queue", "state"],
    buckets=STAGE_BUCKETS,
)
TASK_FAILURES = Counter(
    "medvoice_task_failures_total",
    "Celery tasks that raised, by task, queue and exception class",
    ["task", "queue", "exception"],
)
TASK_RETRIES = Counter("medvoice_task_retries_total", "Celery task retries, by task and queue", ["task", "queue"])
MODEL_LOAD_SECONDS = Histogram(
    "medvoice_model_load_seconds",
    "Loading one model engine in a worker child (once per child: a restarted child loads again)",
    ["engine"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
)


# ---- the worker node's endpoint (its folder: `medvoice worker`, before prometheus_client loads) ----------
def serve_node(host: str, port: int) -> None:
    """The node's /metrics on host:port (a thread in the worker's parent): the sum over its children."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(port, addr=host, registry=registry)
    log.info("worker metrics on http://%s:%d/metrics", host, port)


def child_exited(pid: int) -> None:
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        with contextlib.suppress(Exception):
            multiprocess.mark_process_dead(pid)


# ---- what the stages report -------------------------------------------------------------------------------------
def turn_ended(outcome: str, code: str = "") -> None:
    with contextlib.suppress(Exception):
        TURNS.labels(outcome, code).inc()


def stage_ran(stage: str, outcome: str, seconds: float) -> None:
    with contextlib.suppress(Exception):
        STAGE_SECONDS.labels(stage, outcome).observe(seconds)


def stage_recorded(stage: str, timing: Any, fields: dict[str, Any]) -> None:
    """A stage's recorded timing and fields (workers/pipeline/stage.py `record`): the llm's parts and checks."""
    if stage != "llm" or not isinstance(timing, dict):
        return
    try:
        first = timing.get("first_token_s")
        if isinstance(first, (int, float)):
            LLM_PROMPT_EVAL_SECONDS.labels(stage).observe(first)
        tokens, rate = timing.get("tokens"), timing.get("tokens_per_s")
        if isinstance(tokens, int) and isinstance(rate, (int, float)) and rate > 0 and tokens > 1:
            LLM_DECODE_SECONDS.labels(stage).observe((tokens - 1) / rate)
        if isinstance(timing.get("prompt_tokens"), int):
            LLM_TOKENS.labels("prompt").inc(timing["prompt_tokens"])
        if isinstance(tokens, int):
            LLM_TOKENS.labels("generated").inc(tokens)
        for action in ("replaced", "dropped"):
            n = timing.get(f"guard_{action}")
            if isinstance(n, int) and n > 0:
                CLAIM_CHECK.labels(action).inc(n)
        mode = (fields.get("verdicts") or {}).get("mode") or timing.get("mode")
        if isinstance(mode, str) and mode:
            ANSWERS.labels(mode).inc()
    except Exception:  # a metric never fails a stage
        log.debug("llm metrics not recorded", exc_info=True)


def first_audio(turn_id: str, created_at: Any, input_kind: str | None) -> None:
    """Turn created → its stream's first `audio` event (Redis stream ids are milliseconds since the epoch)."""
    try:
        from datetime import UTC

        from workers.core import events

        if created_at is None:
            return
        created = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
        for event_id, event in events.read(turn_id):
            if event.get("type") == "audio":
                at_ms = int(str(event_id).split("-", 1)[0])
                FIRST_AUDIO_SECONDS.labels(input_kind or "audio").observe(max(0.0, at_ms / 1000 - created.timestamp()))
                return
    except Exception:  # a metric never fails a stage
        log.debug("first-audio metric not recorded", exc_info=True)


def models_loaded(seconds: dict[str, float]) -> None:
    for engine, s in seconds.items():
        with contextlib.suppress(Exception):
            MODEL_LOAD_SECONDS.labels(engine).observe(s)


# ---- Celery task signals (connected by workers/celery_app.py) -----------------------------------------------------
_started: dict[str, float] = {}  # task id → perf_counter at prerun (same child process)


def _queue(task: Any) -> str:
    info = getattr(getattr(task, "request", None), "delivery_info", None) or {}
    return str(info.get("routing_key") or (task.name.split(".", 1)[0] if getattr(task, "name", None) else ""))


def task_started(task_id: str | None) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


def task_finished(task: Any, task_id: str | None, state: str | None) -> None:
    t0 = _started.pop(task_id or "", None)
    if t0 is None or task is None:
        return
    with contextlib.suppress(Exception):
        TASK_SECONDS.labels(task.name, _queue(task), state or "").observe(time.perf_counter() - t0)


def task_failed(task: Any, exc: BaseException | None) -> None:
    with contextlib.suppress(Exception):
        TASK_FAILURES.labels(task.name, _queue(task), type(exc).__name__ if exc is not None else "").inc()


def task_retried(task: Any) -> None:
    with contextlib.suppress(Exception):
        TASK_RETRIES.labels(task.name, _queue(task)).inc()
