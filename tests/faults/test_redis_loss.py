"""Redis stopped while turns are open: new turns get 503 with a reason, /readyz says redis is missing, an open
event stream ends with an `error` event (broker_unavailable), and nothing recorded is lost. Redis back, with its
append-only file: the turn that was queued completes, the refused one stays `error` with its reason, and none
stays `queued`. The API, the worker and Redis are real processes of their own (the session's Redis goes on)."""

from __future__ import annotations

import json
import os
import signal
import threading

import httpx
import pytest

from tests.conftest import wait_for
from tests.faults.procs import Redis, Stack

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(tmp_path):
    rd = Redis(tmp_path)
    rd.start()
    s = Stack(tmp_path, rd.url)
    s.redis = rd
    try:
        s.start_api()
        s.start_worker()
        s.wait_ready()
        yield s
    finally:
        s.stop()
        rd.stop()


def follow(base: str, tid: str, headers: dict, out: list) -> None:
    """An SSE client: every (type, data) until the server ends the response."""
    with httpx.stream("GET", f"{base}/v1/turns/{tid}/events", headers=headers, timeout=120) as r:
        for block in r.iter_text():
            out.append(block)


def parse(chunks: list[str]) -> list[tuple[str, dict]]:
    out = []
    for block in "".join(chunks).split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_redis_stopped_and_back(stack):
    base, h = stack.base, stack.user()
    cid = httpx.post(f"{base}/v1/consultations", json={"title": "redis"}, headers=h).json()["id"]
    # The worker is paused, so the first turn is still queued when Redis goes.
    os.killpg(stack.worker.pid, signal.SIGSTOP)
    r = httpx.post(f"{base}/v1/consultations/{cid}/turns", json={"text": "What relieves ear pain?"}, headers=h)
    assert r.status_code == 202, r.text
    queued = r.json()["turn_id"]
    chunks: list[str] = []
    client = threading.Thread(target=follow, args=(base, queued, h, chunks), daemon=True)
    client.start()
    # A queued turn's stream is quiet: its heartbeat says the client is following it.
    wait_for(lambda: ": keep-alive" in "".join(chunks), 30, "the open stream's heartbeat")

    stack.redis.stop()
    client.join(60)
    assert not client.is_alive(), "the open event stream did not end when Redis went"
    last = parse(chunks)[-1]
    assert last[0] == "error" and last[1]["code"] == "broker_unavailable", parse(chunks)

    r = httpx.post(f"{base}/v1/consultations/{cid}/turns", json={"text": "And for a child?"}, headers=h)
    assert r.status_code == 503, r.text
    assert r.json()["detail"]["code"] == "broker_unavailable" and r.json()["detail"]["message"], r.text
    refused = r.json()["detail"]["details"]["turn_id"]
    ready = httpx.get(f"{base}/readyz", timeout=30)
    assert ready.status_code == 503 and "redis" in ready.json()["missing"], ready.text
    # Reads go on from SQL: both turns are on the record.
    turns = {t["id"]: t for t in httpx.get(f"{base}/v1/consultations/{cid}", headers=h).json()["turns"]}
    assert turns[queued]["status"] == "queued"
    assert turns[refused]["status"] == "error" and "broker_unavailable" in turns[refused]["error"]

    stack.redis.start()  # the same directory: the append-only file brings back the queued chain
    os.killpg(stack.worker.pid, signal.SIGCONT)
    stack.wait_ready()
    chunks.clear()
    follow(base, queued, h, chunks)
    types = [t for t, _ in parse(chunks)]
    assert types[-1] == "done" and types.count("done") == 1, types

    turns = {t["id"]: t for t in httpx.get(f"{base}/v1/consultations/{cid}", headers=h).json()["turns"]}
    assert len(turns) == 2
    assert turns[queued]["status"] == "done" and turns[queued]["answer"], turns[queued]
    assert turns[refused]["status"] == "error" and turns[refused]["error"].startswith("enqueue: broker_unavailable")
    assert not [t for t in turns.values() if t["status"] not in ("done", "error")]
    assert httpx.get(f"{base}/readyz", timeout=30).status_code == 200


def test_redis_stopped_during_a_live_session(stack):
    """A live (Realtime) session waiting on its answer when Redis goes is told: an `error` event
    broker_unavailable and the response failed; the session's turn stays on the record."""
    import asyncio

    pytest.importorskip("openai")
    from tests.consultation.realtime_client import Collector, client
    from workers.core.db import session_scope
    from workers.core.records import Turn

    h = stack.user()
    key = h["Authorization"].removeprefix("Bearer ")
    os.killpg(stack.worker.pid, signal.SIGSTOP)  # the answer cannot come: the session waits on its stream

    async def main() -> Collector:
        server = stack.base.removeprefix("http://")
        async with client(server, key).beta.realtime.connect(model="medvoice-realtime") as conn:
            got = Collector(conn)
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Ear pain?"}]}
            )
            await conn.response.create()
            await got.until("response.created", 1, timeout_s=60)
            await asyncio.to_thread(stack.redis.stop)
            await got.until("response.done", 1, timeout_s=60)
            return got

    got = asyncio.run(main())
    errors = [e["error"]["code"] for e in got.of("error")]
    assert "broker_unavailable" in errors, [t for _, t, _ in got.events]
    done = got.of("response.done")[-1]["response"]
    assert done["status"] == "failed" and done["status_details"]["error"]["code"] == "broker_unavailable", done
    with session_scope(stack.db_url) as db:
        assert db.get(Turn, done["metadata"]["turn_id"]) is not None
