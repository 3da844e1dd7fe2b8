"""One `ping` task per queue: proves routing reaches the right pool and reports who answered."""

from __future__ import annotations

import os
import socket
import time

from workers.celery_app import celery_app
from workers.core.settings import POOLS


def _ping(pool: str, task) -> dict:  # noqa: ANN001
    return {
        "pool": pool,
        "queue": task.request.delivery_info.get("routing_key") if task.request.delivery_info else None,
        "worker": task.request.hostname,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "at": time.time(),
    }


def _register(pool: str) -> None:
    @celery_app.task(name=f"{pool}.ping", bind=True)
    def ping(self) -> dict:  # noqa: ANN001
        return _ping(pool, self)


for _pool in POOLS:
    _register(_pool)
