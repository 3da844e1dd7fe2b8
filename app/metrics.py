"""The API's product metrics (`medvoice_*`) and what its `/metrics` serves.

- HTTP requests by route template (never the raw path: ids would make a series per turn), method and status,
  with a latency histogram (an SSE stream counts until it ends), from a plain ASGI middleware;
- live sessions: open, refused (limits, a live pool behind), the lag of final transcripts, barge-ins,
  partial-transcript latency, end of speech → first audio of the reply;
- read at scrape time: each Celery queue's depth in Redis (its priority lists too), and the knowledge base's
  documents and chunks (`rag.stats` on the rag pool, with a short timeout, reused for metrics_kb_cache_s);
- what workers/ code running in this process counts (the stalled-turn reaper: medvoice_turns_total).

The worker pools serve their own (workers/metrics.py, one endpoint per worker node). Labels carry route
templates, codes and names of queues only: no clinical text, no user names. `metrics_public` false (the default)
serves only loopback clients and admin JWTs.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.core.settings import POOLS, Settings
from workers.metrics import LATENCY_BUCKETS

log = logging.getLogger("medvoice.metrics")

HTTP_REQUESTS = Counter(
    "medvoice_http_requests_total", "HTTP requests by route template, method and status", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "medvoice_http_request_duration_seconds",
    "HTTP request → last byte of the response, by route template and method",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
LIVE_SESSIONS = Gauge(
    "medvoice_live_sessions_open", "Live voice sessions open (Realtime and FunASR)", multiprocess_mode="livesum"
)
LIVE_REFUSED = Counter(
    "medvoice_live_sessions_refused_total",
    "Live sessions refused at connection: `limit` (sessions per process or user), `behind` (the live pool's lag)",
    ["reason"],
)
LIVE_FINAL_LAG_SECONDS = Gauge(
    "medvoice_live_final_lag_seconds",
    "Age of the oldest final transcript a live session waits for from the live pool (0: none waiting)",
    multiprocess_mode="livemax",
)
BARGE_INS = Counter("medvoice_live_barge_ins_total", "Speech over a reply that stopped it (barge-in)")
LIVE_FIRST_AUDIO_SECONDS = Histogram(
    "medvoice_live_first_audio_seconds",
    "Live sessions: end of the clinician's speech → the first audio of the reply sent",
    buckets=LATENCY_BUCKETS,
)
PARTIAL_SECONDS = Histogram(
    "medvoice_live_partial_transcript_seconds",
    "Live sessions: one partial re-transcription on the live pool, sent → its hypothesis back",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
)


# ---- HTTP ---------------------------------------------------------------------------------------------------------
class MetricsMiddleware:
    """Counts each HTTP request under its route's template (`/v1/turns/{turn_id}`), `unmatched` when no route
    took it; WebSockets are counted as live sessions instead."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before it answers

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"  # Starlette sets the matched route
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(route, method, str(status)).inc()
            HTTP_SECONDS.labels(route, method).observe(time.perf_counter() - started)


# ---- who may read /metrics ----------------------------------------------------------------------------------------
def loopback(host: str | None) -> bool:
    """The client's address (as the server saw it) is loopback: a Prometheus on this host."""
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


# ---- read at scrape time ------------------------------------------------------------------------------------------
PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport: a queue's priority lists are <queue>\x06\x16<step>


def queue_keys(queue: str) -> list[str]:
    from kombu.transport.redis import PRIORITY_STEPS

    return [queue if not step else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


class ScrapeCollector:
    """Figures that live elsewhere, read when Prometheus scrapes: queue depths (Redis) and the knowledge base."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._kb: tuple[float, dict[str, Any] | None] = (-1e9, None)  # (monotonic time read, rag.stats or None)

    def describe(self) -> list:
        return []  # read at scrape time only: nothing to check at registration

    def collect(self):  # noqa: ANN201
        depth = GaugeMetricFamily(
            "medvoice_queue_depth_messages", "Tasks waiting in each Celery queue (every priority)", labels=["queue"]
        )
        try:
            import redis

            r = redis.Redis.from_url(self.settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
            pipe = r.pipeline()
            for queue in POOLS:
                for key in queue_keys(queue):
                    pipe.llen(key)
            counts = pipe.execute()
            steps = len(counts) // len(POOLS)
            for i, queue in enumerate(POOLS):
                depth.add_metric([queue], float(sum(counts[i * steps : (i + 1) * steps])))
        except Exception as exc:  # noqa: BLE001 - Redis down: no depth this scrape (/readyz says why)
            log.debug("queue depth not read: %s", type(exc).__name__)
        yield depth
        kb = self._kb_stats()
        if kb is not None:
            yield GaugeMetricFamily("medvoice_kb_documents", "Documents in the knowledge base", value=kb["documents"])
            yield GaugeMetricFamily("medvoice_kb_chunks", "Chunks (passages) in the knowledge base", value=kb["chunks"])

    def _kb_stats(self) -> dict[str, Any] | None:
        with self._lock:  # one rag.stats at a time, however many scrapers
            at, stats = self._kb
            if time.monotonic() - at < self.settings.metrics_kb_cache_s:
                return stats
            try:
                from app import task_client

                out = task_client.call("rag.stats", timeout_s=2.0)
                stats = {"documents": float(out["documents"]), "chunks": float(out["chunks"])}
            except Exception as exc:  # noqa: BLE001 - no rag worker now: no KB figures until one answers
                log.debug("kb stats not read: %s", type(exc).__name__)
                stats = None
            self._kb = (time.monotonic(), stats)
            return stats


def render(collector: ScrapeCollector) -> bytes:
    """This process's metrics (prometheus-client's default registry: process, Python, ours) + the scrape-time ones."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(collector)
    return generate_latest(REGISTRY) + generate_latest(scrape)
