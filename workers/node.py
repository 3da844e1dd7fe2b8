"""One worker node: a Celery prefork worker for one or more pools' queues (what `medvoice worker` runs).

`medvoice worker` checks its options, then replaces itself with `python -m workers.node` (exec: the same
process). The node's parent, which every pool child is forked from, then holds Celery and the task registry
only, not the CLI's SQL, HTTP and migration code; a pool child imports its own stage and models after the fork
(workers/celery_app.py).

    python -m workers.node --queues asr --concurrency 1 --hostname asr@%h [--loglevel INFO] [--metrics-port 9101]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket

from workers.core import logs
from workers.core.refs import force_offline
from workers.core.settings import POOLS, Settings, get_settings


def metrics_dir(settings: Settings, node: str) -> None:
    """The node's own multiprocess folder, emptied: its children's figures, never an earlier run's. Set before
    prometheus_client is imported (by the task modules)."""
    base = settings.metrics_dir or settings.data_dir / "metrics"
    path = base / re.sub(r"[^A-Za-z0-9._@-]", "_", node.replace("%h", socket.gethostname()))
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m workers.node", description="Run one Celery worker node.")
    ap.add_argument("--queues", required=True, help="comma-separated pools: " + ", ".join(POOLS))
    ap.add_argument("--concurrency", type=int, required=True, help="pool child processes")
    ap.add_argument("--hostname", required=True, help="Celery node name, e.g. asr@%%h")
    ap.add_argument("--loglevel", default="INFO")
    ap.add_argument("--metrics-port", type=int, default=0, help="serve this node's metrics here (0: none)")
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    queues = [q for q in args.queues.split(",") if q]
    if not queues or set(queues) - set(POOLS):
        ap.error(f"--queues takes pools from {', '.join(POOLS)}")
    if args.concurrency < 1:
        ap.error("--concurrency must be at least 1")
    force_offline()
    settings = get_settings()
    os.environ["MEDVOICE_WORKER_POOLS"] = ",".join(queues)
    if args.metrics_port:
        metrics_dir(settings, args.hostname)
    logs.configure(args.loglevel, settings.log_format)  # already for Celery's start-up checks
    from workers.celery_app import celery_app

    if args.metrics_port:
        from workers.metrics import serve_node

        serve_node(settings.worker_metrics_host, args.metrics_port)
    celery_app.worker_main(
        [
            *(["--quiet"] if settings.log_format == "json" else []),  # no start-up banner amid JSON lines
            "worker",
            "--queues",
            ",".join(queues),
            "--hostname",
            args.hostname,
            "--concurrency",
            str(args.concurrency),
            "--pool",
            "prefork",
            "--loglevel",
            args.loglevel,
            "--task-events",
        ]
    )


if __name__ == "__main__":
    main()
