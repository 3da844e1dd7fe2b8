"""`medvoice serve` with MEDVOICE_FUNASR_PORT: the API and FunASR's root path in one process, both stopped by one
signal. No worker is needed: an empty stream is answered without transcription."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port, wait_for
from tests.live import funasr_client as fc

pytest.importorskip("websockets")


def test_serve_runs_the_api_and_the_funasr_port_together(tmp_path: Path) -> None:
    from app.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'medvoice.db'}"
    upgrade(url)
    api, funasr = free_port(), free_port()
    env = {
        **os.environ,
        "MEDVOICE_DATABASE_URL": url,
        "MEDVOICE_DATA_DIR": str(tmp_path / "data"),
        "MEDVOICE_FUNASR_PORT": str(funasr),
        "MEDVOICE_CONSULT_REAP_INTERVAL_S": "0",
    }
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(api)], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{api}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "medvoice serve")
        res = asyncio.run(fc.run(f"ws://127.0.0.1:{funasr}/", fc.config("offline", wav_name="x"), []))
        assert res.final == {"mode": "offline", "wav_name": "x", "text": "", "is_final": True}
        # The same handler on the API port wants a JWT.
        refused = asyncio.run(fc.run(f"ws://127.0.0.1:{api}/v1/asr/funasr", fc.config("offline"), []))
        assert refused.close_code == 1008 and "not authenticated" in refused.close_reason
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) is not None  # one signal stops both servers
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
