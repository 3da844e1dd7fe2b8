"""The live pool's backlog as the API sees it (app/live/backlog.py): the age of the oldest final transcript still
waited for; partial transcripts paused above one bound, new live sessions refused above another (close 1013 with
the lag in the reason) while the open ones carry on. Over a real uvicorn and a real Redis with no live worker, so
a final that a session sent waits for exactly as long as the test needs; the speech is espeak-ng's."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from app.live import backlog
from tests.conftest import serve_in_thread
from tests.live import funasr_client as fc
from workers.core.settings import Settings

websockets = pytest.importorskip("websockets")
PASSWORD = "password-1234"
ADMIT_LAG_S = 0.5


# ---- the tracker alone ---------------------------------------------------------------------------------------------
def test_the_lag_is_the_age_of_the_oldest_final_still_waited_for() -> None:
    b = backlog.Backlog()
    assert b.lag_s() == 0.0
    with b.waiting():
        time.sleep(0.2)
        with b.waiting():
            assert b.waiting_count == 2
            assert b.lag_s() >= 0.2  # the older one counts
        assert b.lag_s() >= 0.2
    assert b.lag_s() == 0.0 and b.waiting_count == 0


def test_a_failed_or_cancelled_wait_leaves_the_backlog() -> None:
    b = backlog.Backlog()
    with pytest.raises(RuntimeError), b.waiting():
        raise RuntimeError("the pool answered an error")

    async def waits_forever() -> None:
        with b.waiting():
            await asyncio.sleep(60)

    async def main() -> None:
        task = asyncio.create_task(waits_forever())
        await asyncio.sleep(0.05)
        assert b.waiting_count == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert b.waiting_count == 0 and b.lag_s() == 0.0


def test_the_bounds_and_zero_for_never(monkeypatch: pytest.MonkeyPatch) -> None:
    b = backlog.Backlog()
    monkeypatch.setattr(backlog, "BACKLOG", b)
    s = Settings(live_behind_lag_s=0.1, live_admit_max_lag_s=0.3)
    off = Settings(live_behind_lag_s=0, live_admit_max_lag_s=0)
    with b.waiting():
        assert not backlog.behind(s) and backlog.refusal(s) is None
        time.sleep(0.15)
        assert backlog.behind(s) and backlog.refusal(s) is None
        time.sleep(0.2)
        reason = backlog.refusal(s)
        assert reason is not None and "behind" in reason and "try again later" in reason
        assert not backlog.behind(off) and backlog.refusal(off) is None


# ---- over real servers ---------------------------------------------------------------------------------------------
@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The API and the dedicated FunASR port, a clinician's JWT, and the live queue emptied afterwards (the final
    left in it must not be transcribed by a later test's worker)."""
    import httpx
    import redis

    from app import users as svc
    from app.main import create_app
    from app.metrics import queue_keys
    from app.migrate import upgrade
    from app.routes.funasr import create_funasr_app
    from workers.core.db import session_scope
    from workers.core.records import Role

    url = f"sqlite:///{tmp_path / 'medvoice.db'}"
    upgrade(url)
    settings = Settings(
        database_url=url,
        data_dir=tmp_path / "data",
        kb_dir=tmp_path / "data" / "knowledge",
        live_admit_max_lag_s=ADMIT_LAG_S,
    )
    with session_scope(settings.resolved_database_url) as db:
        svc.create_user(db, "lee", PASSWORD, Role.clinician)
    running = [serve_in_thread(create_app(settings)), serve_in_thread(create_funasr_app(settings))]
    http = f"http://127.0.0.1:{running[0][2]}"
    r = httpx.post(f"{http}/v1/auth/token", data={"username": "lee", "password": PASSWORD}, timeout=30)
    assert r.status_code == 200, r.text
    try:
        yield {
            "http": http,
            "realtime": f"ws://127.0.0.1:{running[0][2]}/v1/realtime",
            "funasr": f"ws://127.0.0.1:{running[1][2]}/",
            "token": r.json()["access_token"],
        }
    finally:
        for server, thread, _port in running:
            server.should_exit = True
            thread.join(15)
        redis.Redis.from_url(settings.redis_url).delete(*queue_keys("live"))


def speech(text: str, tmp_path: Path) -> np.ndarray:
    wav = tmp_path / "q.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
    samples, rate = sf.read(str(wav), dtype="int16")
    return soxr.resample(samples, rate, 16000).astype(np.int16)


async def _refused(uri: str, **connect) -> tuple[int, str, list[dict]]:
    """Connect; the messages before the server closes, and its close code and reason."""
    messages = []
    async with websockets.connect(uri, **connect) as ws:
        try:
            while True:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        except websockets.exceptions.ConnectionClosed as exc:
            return exc.rcvd.code, exc.rcvd.reason, messages


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng makes the test speech")
def test_a_pool_behind_refuses_new_sessions_and_keeps_the_open_one(stack: dict[str, str], tmp_path: Path) -> None:
    import httpx

    voice = speech("What is the dose of amoxicillin for a child?", tmp_path)
    audio = np.concatenate([np.zeros(8000, np.int16), voice, np.zeros(8000, np.int16)])

    async def main() -> dict:
        out: dict = {}
        # A dictation whose final is sent to the live pool: no worker takes it, so it waits.
        async with websockets.connect(stack["funasr"], subprotocols=["binary"]) as dictation:
            await dictation.send(json.dumps(fc.config("offline", wav_name="first")))
            for frame in fc.pcm_frames(fc.as_pcm(audio), 16000, 60):
                await dictation.send(frame)
            await dictation.send(json.dumps({"is_speaking": False}))
            t0 = time.monotonic()
            while backlog.BACKLOG.lag_s() <= ADMIT_LAG_S + 0.1:
                assert time.monotonic() - t0 < 20, "the final was never sent to the live pool"
                await asyncio.sleep(0.05)
            out["funasr"] = await _refused(stack["funasr"], subprotocols=["binary"])
            out["realtime"] = await _refused(
                stack["realtime"], additional_headers={"Authorization": f"Bearer {stack['token']}"}
            )
            out["metrics"] = (await asyncio.to_thread(httpx.get, f"{stack['http']}/metrics", timeout=10)).text
            # The open session was not touched: still connected, still waiting for its final.
            await dictation.ping()
            out["open_waiting"] = backlog.BACKLOG.waiting_count
        # It went away: its final no longer waited for, the lag is gone and a new speaker is admitted.
        t0 = time.monotonic()
        while backlog.BACKLOG.waiting_count:
            assert time.monotonic() - t0 < 10, "a closed session's final is still counted"
            await asyncio.sleep(0.05)
        out["metrics_after"] = (await asyncio.to_thread(httpx.get, f"{stack['http']}/metrics", timeout=10)).text
        frames = fc.pcm_frames(fc.as_pcm(np.zeros(16000, np.int16)), 16000, 60)
        out["after"] = await fc.run(stack["funasr"], fc.config("offline", wav_name="after"), frames, timeout_s=30)
        return out

    out = asyncio.run(main())
    code, reason, messages = out["funasr"]
    assert code == 1013 and "behind" in reason, (code, reason)
    assert messages and messages[0]["code"] == "pool_behind" and "try again later" in messages[0]["error"]
    code, reason, messages = out["realtime"]
    assert code == 1013 and "behind" in reason and not messages, (code, reason, messages)
    assert out["open_waiting"] == 1
    refused = [
        ln
        for ln in out["metrics"].splitlines()
        if ln.startswith('medvoice_live_sessions_refused_total{reason="behind"}')
    ]
    assert refused and float(refused[0].split()[-1]) >= 2, refused
    lag = [ln for ln in out["metrics"].splitlines() if ln.startswith("medvoice_live_final_lag_seconds ")]
    assert lag and float(lag[0].split()[-1]) > ADMIT_LAG_S, lag
    assert "medvoice_live_final_lag_seconds 0.0" in out["metrics_after"].splitlines()  # read as of the scrape
    after = out["after"]
    assert after.close_code in (None, 1000) and not after.errors, (after.close_code, after.messages)
    assert after.final is not None and after.final["wav_name"] == "after"
