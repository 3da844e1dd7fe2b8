"""The task client (app/task_client.py) over real Redis and a real rag worker: what each failure becomes, and
how the routes answer it — {"detail": {"code", "message", "details"}} on ours, OpenAI's shape on /v1/audio."""

from __future__ import annotations

import asyncio
import os

import pytest
import typer

from app import task_client
from app import users as svc
from tests.conftest import free_port
from workers.core.db import session_scope
from workers.core.errors import (
    BrokerUnavailable,
    EmptyInput,
    InputError,
    InputTooLarge,
    MedvoiceError,
    WorkerFailed,
    WorkerTimeout,
)
from workers.core.records import Role

PASSWORD = "correct-horse-battery"


@pytest.fixture
def headers(client, settings) -> dict[str, str]:
    with session_scope(settings.resolved_database_url) as db:
        svc.create_user(db, "boss", PASSWORD, Role.admin)
    r = client.post("/v1/auth/token", data={"username": "boss", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
def down_app():
    """Our Celery configuration, pointed at a port where nothing listens. Celery's result consumer retries
    its connection 20 times by default (about 20 s before the first 503); once here keeps the test quick."""
    from workers.celery_app import make_celery

    url = f"redis://127.0.0.1:{free_port()}/0"
    app = make_celery()
    app.conf.update(
        broker_url=url, result_backend=url, result_backend_transport_options={"retry_policy": {"max_retries": 1}}
    )
    return app


def test_an_unreachable_broker_is_503(down_app, client, headers, monkeypatch, capsys):
    with pytest.raises(BrokerUnavailable) as info:
        task_client.call("rag.list", timeout_s=5, app=down_app)
    assert info.value.http_status == 503 and info.value.code == "broker_unavailable"
    assert info.value.details == {"task": "rag.list", "pool": "rag"}

    import workers.celery_app

    monkeypatch.setattr(workers.celery_app, "celery_app", down_app)  # what every caller sends through
    r = client.get("/v1/knowledge/documents", headers=headers)
    assert r.status_code == 503
    assert r.json() == {
        "detail": {
            "code": "broker_unavailable",
            "message": "the rag queue is unavailable",
            "details": {"task": "rag.list", "pool": "rag"},
        }
    }
    r = client.get("/v1/admin/pools", headers=headers)
    assert r.status_code == 503 and r.json()["detail"]["code"] == "broker_unavailable"
    # The OpenAI-compatible routes keep OpenAI's shape.
    r = client.post("/v1/audio/speech", headers=headers, json={"model": "tts-1", "input": "Hello."})
    assert r.status_code == 503
    assert r.json() == {
        "error": {
            "message": "the tts queue is unavailable",
            "type": "server_error",
            "param": None,
            "code": "broker_unavailable",
        }
    }
    # The CLI says so and exits 1 (bad input would be 2).
    from app.cli import kb

    with pytest.raises(typer.Exit) as exited:
        kb._via_worker("rag.list", {}, 5)
    assert exited.value.exit_code == 1
    assert "error: the rag queue is unavailable (broker_unavailable)" in capsys.readouterr().out


def test_no_reply_in_time_is_504(client, headers, settings):
    """No worker serves any pool in this test: whatever is sent waits in its queue until it expires."""
    with pytest.raises(WorkerTimeout) as info:
        task_client.call("llm.ping", timeout_s=1)
    assert info.value.http_status == 504 and info.value.code == "worker_timeout"
    assert str(info.value) == "the llm pool did not answer in 1s" and info.value.details["timeout_s"] == 1

    settings.kb_task_timeout_s = 1  # the app holds this same Settings object
    r = client.get("/v1/knowledge/documents", headers=headers)
    assert r.status_code == 504
    assert r.json()["detail"] == {
        "code": "worker_timeout",
        "message": "the rag pool did not answer in 1s",
        "details": {"task": "rag.list", "pool": "rag", "timeout_s": 1},
    }
    settings.task_time_limit_s = 1  # how long the OpenAI-compatible routes wait
    r = client.post("/v1/audio/speech", headers=headers, json={"model": "tts-1", "input": "Hello."})
    assert r.status_code == 504 and r.json()["error"]["code"] == "worker_timeout"
    assert r.json()["error"]["type"] == "server_error"


def test_async_waits_leave_the_routes_thread_pool_free() -> None:
    """Sixty async callers waiting for a pool that does not answer (no worker here: as live sessions wait for a
    busy live pool) take none of the threads that sync routes and database calls run in (anyio's, 40)."""
    from starlette.concurrency import run_in_threadpool

    async def main() -> list:
        waits = [asyncio.create_task(task_client.call_async("llm.ping", timeout_s=3, expires_s=3)) for _ in range(60)]
        await asyncio.sleep(0.5)
        # Answered now, not once the waits give up (a thread pool they filled would hold it 2.5 s more).
        assert await asyncio.wait_for(run_in_threadpool(lambda: 42), 2.0) == 42
        return await asyncio.gather(*waits, return_exceptions=True)

    outs = asyncio.run(main())
    assert all(isinstance(o, WorkerTimeout) for o in outs), {type(o).__name__ for o in outs}


def test_async_callers_reuse_the_waiter_threads(redis_url: str) -> None:
    """One call after another runs on a waiter thread that keeps its Celery backend and Redis connections: a
    thread per call opened two new connections each time."""
    import redis

    def connections() -> int:
        return int(redis.Redis.from_url(redis_url).info("stats")["total_connections_received"])

    async def main() -> None:
        for _ in range(6):
            with pytest.raises(WorkerTimeout):
                await task_client.call_async("llm.ping", timeout_s=0.05)

    before = connections()
    asyncio.run(main())
    # This check's own two, and one waiter's (broker, result store, its pub/sub): a thread per call made 12 or more.
    assert connections() - before <= 8


def test_a_cancelled_wait_does_not_keep_the_process_from_exiting(redis_url: str) -> None:
    """The API stops when told to, though a live final it gave up on would wait a minute more for its reply."""
    import subprocess
    import sys

    script = (
        "import asyncio\n"
        "from app import task_client\n"
        "async def main():\n"
        "    t = asyncio.create_task(task_client.call_async('llm.ping', timeout_s=120, revoke_on_cancel=True))\n"
        "    await asyncio.sleep(0.5)\n"
        "    t.cancel()\n"
        "    await asyncio.gather(t, return_exceptions=True)\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "MEDVOICE_REDIS_URL": redis_url}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)


@pytest.mark.slow
def test_typed_errors_keep_their_status_and_other_failures_are_502(start_worker, client, headers, settings):
    worker = start_worker(
        "rag",
        timeout_s=120,
        MEDVOICE_KB_DIR=str(settings.data_dir / "knowledge"),
        MEDVOICE_DATA_DIR=str(settings.data_dir),
        MEDVOICE_KB_REFRESH_INTERVAL_S="0",
    )

    def raised(name: str, **kwargs) -> MedvoiceError:
        with pytest.raises(MedvoiceError) as info:
            task_client.call(name, kwargs, timeout_s=60)
        return info.value

    empty = raised("rag.search", query="   ")
    assert type(empty) is EmptyInput and (empty.http_status, empty.code) == (422, "empty_input")
    assert str(empty) == "query is empty" and empty.details == {"field": "query"}
    long = raised("rag.search", query="x" * 4001)
    assert type(long) is InputTooLarge and long.http_status == 413 and long.details["max_chars"] == 4000
    for bad in ({"language": "fr"}, {"k": "many"}, {"filters": ["cardio"]}):
        err = raised("rag.search", query="gout", **bad)
        assert type(err) is InputError and err.http_status == 400 and err.details["field"] in bad
    failed = raised("rag.list", bogus=1)  # a TypeError in the task: not one of ours
    assert type(failed) is WorkerFailed and failed.http_status == 502 and failed.code == "worker_failed"
    assert failed.details["type"] == "TypeError" and str(failed) == "the rag worker failed (TypeError)"
    # Declared in `throws=`: the worker logs bad input as expected, without a traceback.
    assert "raised expected: EmptyInput" in worker.log()

    # Our routes: {"detail": {"code", "message", "details"}} with the error's status.
    r = client.post("/v1/knowledge/search", headers=headers, json={"query": "   "})
    assert r.status_code == 422
    assert r.json() == {"detail": {"code": "empty_input", "message": "query is empty", "details": {"field": "query"}}}
    r = client.delete("/v1/knowledge/documents/no-such-doc", headers=headers)
    assert r.status_code == 404 and r.json()["detail"]["code"] == "input_not_found"
    # The pools view reports a pool that does not answer as a row, with the error's code.
    pools = {p["pool"]: p for p in client.get("/v1/admin/pools?timeout_s=1", headers=headers).json()}
    assert pools["rag"]["ok"] and pools["rag"]["worker"] == worker.name
    assert not pools["llm"]["ok"] and pools["llm"]["error"] == "worker_timeout: the llm pool did not answer in 1s"

    # Every reply read, or failed, is deleted from the result store, which keeps no task's arguments (a live
    # final's are the speaker's audio). (A reply stored after its caller gave up waiting stays until result_expires:
    # other tests share this Redis.)
    import json

    import redis

    sent: list[task_client.Sent] = []
    assert "hits" in task_client.call("rag.search", {"query": "gout"}, timeout_s=60, on_sent=sent.append)
    with pytest.raises(EmptyInput):
        task_client.call("rag.search", {"query": " "}, timeout_s=60, on_sent=sent.append)
    store = redis.Redis.from_url(settings.redis_url)
    assert [store.exists(f"celery-task-meta-{s.result.id}") for s in sent] == [0, 0]
    for key in store.keys("celery-task-meta-*"):
        meta = json.loads(store.get(key))
        assert "args" not in meta and "kwargs" not in meta, meta


def test_a_turn_that_cannot_be_queued_is_503_in_the_one_shape_and_kept(
    down_app, client, headers, monkeypatch, settings
):
    import workers.celery_app
    from workers.core.records import Turn, TurnStatus

    monkeypatch.setattr(workers.celery_app, "celery_app", down_app)
    cid = client.post("/v1/consultations", json={"title": "queue down"}, headers=headers).json()["id"]
    r = client.post(f"/v1/consultations/{cid}/turns", json={"text": "What dose of amoxicillin?"}, headers=headers)
    assert r.status_code == 503, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "broker_unavailable" and set(detail["details"]) == {"turn_id"}
    with session_scope(settings.resolved_database_url) as db:  # the record says what happened
        turn = db.get(Turn, detail["details"]["turn_id"])
        assert turn.status == TurnStatus.error and turn.error.startswith("enqueue: broker_unavailable")
