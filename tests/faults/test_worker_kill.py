"""A pool's worker child SIGKILLed mid-turn: acks_late + reject_on_worker_lost put the stage's message back,
the worker forks a new child, and the stage runs again. The client sees `restart` for that stage and the turn
finishes exactly once: one turn row, one set of citations, one answer, one `done`.

The kill lands inside the stage deterministically: on the stage's `status` event the test takes SQLite's write
lock, so the stage cannot record its result; under the lock it checks the result is not recorded yet (else the
stage outran the test: a fresh turn is tried) and kills the child Celery reports running the task.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3

import pytest

from tests.consultation.shared import worker_env
from tests.faults.helpers import ingest, sse
from workers.core import events
from workers.core.db import session_scope
from workers.core.records import Citation

pytestmark = pytest.mark.slow

POOLS = ("rag", "asr", "llm", "tts")
STAGE_STATUS = {"asr": "transcribing", "rag": "retrieving", "llm": "generating", "tts": "speaking"}
QUESTION = "How should an adult with a middle ear infection be treated?"
ATTEMPTS = 4


@pytest.fixture(scope="module")
def pools(start_module_worker, settings):
    # tts.turn speaks every sentence itself (no clips made early by the llm stage), so it runs long enough to
    # be killed in; the kill and re-delivery path is the same either way.
    env = {**worker_env(settings), "MEDVOICE_CONSULT_STREAM_TTS": "false"}
    workers = {pool: start_module_worker(pool, timeout_s=240, **env) for pool in POOLS}
    ingest(settings)
    return workers


@pytest.fixture(scope="module")
def question_wav(pools, settings) -> bytes:
    from workers.celery_app import celery_app

    out = celery_app.send_task("tts.synthesize", kwargs={"text": QUESTION, "speed": 1.0}).get(timeout=120)
    return (settings.data_dir / out["audio_ref"]).read_bytes()


def running_child(worker, task_name: str) -> int | None:
    """The pid of the pool child Celery says is running this task now."""
    from workers.celery_app import celery_app

    active = celery_app.control.inspect(destination=[worker.name], timeout=3).active() or {}
    pids = [t["worker_pid"] for t in active.get(worker.name, []) if t["name"] == task_name]
    return pids[0] if pids else None


def kill_in_stage(api, tokens, settings, consultation, worker, stage: str, post) -> str | None:
    """Start a turn, kill `worker`'s child inside `stage`; the turn id, or None when the stage outran the test."""
    r = post()
    assert r.status_code == 202, r.text
    tid = r.json()["turn_id"]
    after = "0-0"
    while True:
        got = events.read(tid, after=after, block_ms=0)
        after = got[-1][0]
        if any(e["type"] == "status" and e.get("status") == STAGE_STATUS[stage] for _, e in got):
            break
        assert not any(e["type"] in ("done", "error") for _, e in got), got
    lock = sqlite3.connect(settings.resolved_database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # no other writer until the kill: the stage cannot record its result
        if _recorded_under(lock, tid, stage):
            return None
        pid = running_child(worker, f"{stage}.turn")
        if pid is None:
            return None
        os.kill(pid, signal.SIGKILL)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    # The turn is told in the stream; read it to its end (a new child loads its models first).
    sse(api, tid, tokens["ann"])
    return tid


def _recorded_under(lock: sqlite3.Connection, turn_id: str, stage: str) -> bool:
    status, timings = lock.execute("SELECT status, timings FROM turns WHERE id = ?", (turn_id,)).fetchone()
    return status == "done" or stage in json.loads(timings or "{}")


@pytest.mark.parametrize("stage", POOLS)
def test_a_killed_pool_child_finishes_the_turn_once(api, tokens, settings, consultation, pools, question_wav, stage):
    h = tokens["ann"]

    def post():
        if stage == "asr":
            return api.post(
                f"/v1/consultations/{consultation}/turns",
                files={"file": ("q.wav", question_wav, "audio/wav")},
                data={"language": "en"},
                headers=h,
            )
        return api.post(f"/v1/consultations/{consultation}/turns", json={"text": QUESTION}, headers=h)

    before = api.get(f"/v1/consultations/{consultation}", headers=h).json()["turns"]
    for _ in range(ATTEMPTS):
        tid = kill_in_stage(api, tokens, settings, consultation, pools[stage], stage, post)
        if tid is not None:
            break
    else:
        pytest.fail(f"the {stage} stage finished before the test could kill it, {ATTEMPTS} times")

    stream = sse(api, tid, h)
    types = [t for t, _ in stream]
    assert [d["stage"] for t, d in stream if t == "restart"] == [stage], types
    assert types[-1] == "done" and types.count("done") == 1, types
    # After the restart the client has exactly one of each of the stage's results.
    tail = types[types.index("restart") :]
    result = {"asr": "transcribed", "rag": "retrieved", "llm": "answered", "tts": "audio_ready"}[stage]
    assert tail.count(result) == 1, types
    assert types.count("retrieved") == 1 or stage == "rag", types

    turn = api.get(f"/v1/turns/{tid}", headers=h).json()
    assert turn["status"] == "done" and turn["error"] is None and turn["answer"], turn
    assert turn["citations"], turn
    with session_scope(settings.resolved_database_url) as db:
        rows = [(c.n, c.chunk_id) for c in db.query(Citation).filter_by(turn_id=tid)]
    assert len(rows) == len(set(rows)) == len(turn["citations"]), rows
    retrieved = [d for t, d in stream if t == "retrieved"][-1]
    assert sorted(n for n, _ in rows) == [c["n"] for c in retrieved["citations"]]
    if stage == "asr":
        assert "infection" in turn["transcript"].lower()
    assert api.get(f"/v1/turns/{tid}/audio", headers=h).status_code == 200
    # One new turn row per attempt, and none left unfinished.
    after = api.get(f"/v1/consultations/{consultation}", headers=h).json()["turns"]
    assert {t["status"] for t in after} <= {"done"} and len(after) > len(before)
    # The worker forked a new child that loaded its models: the pool answers again.
    assert pools[stage].proc.poll() is None
