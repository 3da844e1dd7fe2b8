"""Celery on real Redis with real worker processes: each queue reaches its own pool; /readyz knows."""

import httpx
import pytest

from tests.conftest import free_port, wait_for
from workers.core.settings import POOLS, Settings


@pytest.fixture(scope="module")
def pools(start_module_worker):
    return {pool: start_module_worker(pool) for pool in POOLS}


def test_each_queue_is_served_by_its_own_pool(pools):
    from workers.celery_app import celery_app

    for pool, worker in pools.items():
        reply = celery_app.send_task(f"{pool}.ping").get(timeout=20)
        assert reply["pool"] == pool
        assert reply["queue"] == pool
        assert reply["worker"] == worker.name
        # The task ran in the pool's child process, not the worker's parent.
        assert reply["pid"] != worker.proc.pid


def test_worker_consumes_only_its_queue(start_worker):
    from workers.celery_app import celery_app

    asr = start_worker("asr", wait_for_models=False)
    replies = celery_app.control.inspect(destination=[asr.name], timeout=2).active_queues()
    assert [q["name"] for q in replies[asr.name]] == ["asr"]


def test_pool_all_serves_every_queue(start_worker):
    from workers.celery_app import celery_app

    w = start_worker("all", wait_for_models=False)  # queues only: its models need not finish loading
    replies = celery_app.control.inspect(destination=[w.name], timeout=2).active_queues()
    assert sorted(q["name"] for q in replies[w.name]) == sorted(POOLS)


def test_celery_reliability_settings():
    from workers.celery_app import celery_app

    conf = celery_app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_time_limit and conf.task_soft_time_limit < conf.task_time_limit


def test_readyz_reports_unmigrated_database(tmp_path, redis_url):
    from fastapi.testclient import TestClient

    from app.main import create_app

    s = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}", data_dir=tmp_path)
    with TestClient(create_app(s)) as c:
        body = c.get("/readyz").json()
        assert body["ready"] is False and "database" in body["missing"]
        assert c.get("/healthz").json() == {"status": "ok"}


def test_admin_round_trip_through_every_queue(client, pools, settings):
    from app import users as svc
    from workers.core.db import session_scope
    from workers.core.records import Role

    with session_scope(settings.resolved_database_url) as db:
        svc.create_user(db, "ops", "operator-password", Role.admin)
    token = client.post("/v1/auth/token", data={"username": "ops", "password": "operator-password"}).json()
    r = client.get("/v1/admin/pools", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert r.status_code == 200
    assert {p["pool"]: p["worker"] for p in r.json()} == {pool: w.name for pool, w in pools.items()}


def test_flower_sees_the_four_pools(pools, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    log = open(tmp_path / "flower.log", "wb")  # noqa: SIM115 - handed to the child, closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "flower", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        seen: dict = {}

        def all_pools_visible() -> bool:
            nonlocal seen
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/workers", params={"refresh": "1"}, timeout=5)
            except httpx.HTTPError:
                return False
            if r.status_code != 200:
                return False
            seen = r.json()
            return all(w.name in seen for w in pools.values())

        wait_for(all_pools_visible, 60, "flower to list the workers", interval_s=1)
        for pool, w in pools.items():
            queues = [q["name"] for q in seen[w.name].get("active_queues", [])]
            assert queues == [pool]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
        log.close()
