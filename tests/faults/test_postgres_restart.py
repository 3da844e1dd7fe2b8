"""PostgreSQL restarted in the middle of a turn: the rag stage, held on a table lock in the middle of its write,
has its connection cut, is retried (a transient database error), and the turn completes once; nothing recorded
is lost. The cluster is
the test's own (initdb as the `postgres` user), so restarting it disturbs no other server."""

from __future__ import annotations

import contextlib
import os
import shutil

import httpx
import pytest

from tests.conftest import wait_for
from tests.faults.procs import Postgres, Stack, pg_tool
from workers.core import events

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
QUESTION = "What relieves ear pain in otitis media?"
ATTEMPTS = 4


@pytest.fixture
def stack(tmp_path, redis_url):
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("a PostgreSQL cluster of the test's own is started as the `postgres` user: needs root")
    if pg_tool("initdb") is None or pg_tool("pg_ctl") is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl)")
    pg = Postgres()
    try:
        pg.init()
    except LookupError as exc:
        pg.remove()
        pytest.skip(f"no `postgres` user to run a cluster as: {exc}")
    pg.pg_ctl("start")
    s = Stack(tmp_path / "stack", redis_url, db_url=pg.url, MEDVOICE_CONSULT_STAGE_RETRIES="4")
    s.pg = pg
    try:
        s.start_api()
        s.start_worker()
        s.wait_ready()
        yield s
    finally:
        s.stop()
        pg.pg_ctl("stop")
        pg.remove()


def wait_status(tid: str, status: str) -> None:
    after = "0-0"
    while True:
        got = events.read(tid, after=after, block_ms=0)
        after = got[-1][0]
        if any(e["type"] == "status" and e.get("status") == status for _, e in got):
            return
        assert not any(e["type"] in ("done", "error") for _, e in got), got


def test_postgres_restarted_mid_turn_the_stage_is_retried(stack):
    from sqlalchemy import create_engine, text

    from tests.consultation.shared import KB_DOC
    from workers.celery_app import celery_app

    src = stack.root / "kb-src" / "otitis.md"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(KB_DOC, encoding="utf-8")
    added = celery_app.send_task("rag.ingest", args=[[str(src)]], kwargs={"source": "formulary"}).get(timeout=180)
    assert added["added"] == 1, added
    wait_for(lambda: (stack.root / "data" / "knowledge" / "vocabulary.json").exists(), 60, "the KB vocabulary")
    base, h = stack.base, stack.user()
    cid = httpx.post(f"{base}/v1/consultations", json={"title": "pg"}, headers=h).json()["id"]
    # A first turn, so the worker holds pooled connections that the restart will cut.
    first = httpx.post(f"{base}/v1/consultations/{cid}/turns", json={"text": QUESTION}, headers=h).json()["turn_id"]
    assert "event: done" in httpx.get(f"{base}/v1/turns/{first}/events", headers=h, timeout=300).text

    probe = create_engine(stack.db_url, isolation_level="AUTOCOMMIT")
    for _ in range(ATTEMPTS):
        tid = httpx.post(f"{base}/v1/consultations/{cid}/turns", json={"text": QUESTION}, headers=h).json()["turn_id"]
        wait_status(tid, "retrieving")
        lock = create_engine(stack.db_url).connect()
        lock.execute(text("LOCK TABLE turns IN ACCESS EXCLUSIVE MODE"))  # the stage's write must wait
        recorded = lock.execute(text("SELECT timings FROM turns WHERE id = :id"), {"id": tid}).scalar()
        if "rag" not in str(recorded or {}):
            break
        lock.rollback()  # the stage outran the test: another turn
        lock.close()
        httpx.get(f"{base}/v1/turns/{tid}/events", headers=h, timeout=300)
    else:
        pytest.fail(f"the rag stage finished before the test could hold it, {ATTEMPTS} times")

    def stage_waits() -> bool:
        q = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        with probe.connect() as conn:
            return conn.execute(text(q)).scalar() >= 1

    wait_for(stage_waits, 120, "the rag stage to wait on the turns table")
    probe.dispose()
    stack.pg.pg_ctl("restart")  # every connection is cut: the stage's, in the middle of its statement, too
    with contextlib.suppress(Exception):
        lock.close()
    stream = httpx.get(f"{base}/v1/turns/{tid}/events", headers=h, timeout=300).text
    types = [ln.removeprefix("event: ") for ln in stream.splitlines() if ln.startswith("event: ")]
    assert types[-1] == "done" and types.count("done") == 1, types

    turn = httpx.get(f"{base}/v1/turns/{tid}", headers=h).json()
    assert turn["status"] == "done" and turn["error"] is None and turn["answer"] and turn["citations"], turn
    ns = [c["n"] for c in turn["citations"]]
    assert len(ns) == len(set(ns))
    turns = httpx.get(f"{base}/v1/consultations/{cid}", headers=h).json()["turns"]
    assert {t["status"] for t in turns} == {"done"}, turns
    assert "stage=rag transient OperationalError, retry 1/" in stack.log("worker")
