"""What /readyz checks: the database (schema at head), Redis, and a consumer on every pool's queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

from workers.core.db import get_engine
from workers.core.settings import POOLS, Settings

ROOT = Path(__file__).resolve().parent.parent


def alembic_head() -> str | None:
    script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    return script.get_current_head()


def check_database(settings: Settings) -> dict[str, Any]:
    try:
        with get_engine(settings.resolved_database_url).connect() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by type
        return {"ok": False, "detail": f"{type(exc).__name__}: database unreachable or not migrated"}
    head = alembic_head()
    if current != head:
        return {"ok": False, "detail": f"schema at {current}, code expects {head}: run `medvoice migrate`"}
    return {"ok": True, "revision": current}


def check_redis(settings: Settings) -> dict[str, Any]:
    import redis

    try:
        redis.Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "detail": f"{type(exc).__name__}: redis not answering"}
    return {"ok": True}


def check_pools(settings: Settings) -> dict[str, Any]:
    """Every queue needs a consumer whose model engines have finished loading (a child has loaded)."""
    import redis

    from workers.celery_app import ENGINES_READY_PREFIX, celery_app

    consumers: dict[str, list[str]] = {pool: [] for pool in POOLS}
    try:
        replies = celery_app.control.inspect(timeout=settings.readiness_timeout_s).active_queues() or {}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "detail": f"{type(exc).__name__}: cannot reach workers", "consumers": consumers}
    for worker, queues in replies.items():
        for q in queues or []:
            if q.get("name") in consumers:
                consumers[q["name"]].append(worker)
    r = redis.Redis.from_url(settings.redis_url, socket_timeout=1)
    loaded = {w for w in replies if r.scard(ENGINES_READY_PREFIX + w) > 0}
    missing = [pool for pool, workers in consumers.items() if not workers]
    loading = [pool for pool, workers in consumers.items() if workers and not loaded & set(workers)]
    result: dict[str, Any] = {
        "ok": not missing and not loading,
        "consumers": {k: sorted(v) for k, v in consumers.items()},
        "loading_models": sorted(set(replies) - loaded),
    }
    problems = []
    if missing:
        problems.append(f"no worker consuming: {', '.join(missing)}")
    if loading:
        problems.append(f"models still loading: {', '.join(loading)}")
    if problems:
        result["detail"] = "; ".join(problems)
    return result


def readiness(settings: Settings) -> dict[str, Any]:
    checks = {"database": check_database(settings), "redis": check_redis(settings)}
    checks["pools"] = check_pools(settings) if checks["redis"]["ok"] else {"ok": False, "detail": "redis down"}
    missing = [name for name, c in checks.items() if not c["ok"]]
    return {"ready": not missing, "missing": missing, "checks": checks}
