"""No clinical or user text in the logs at INFO: a canary phrase goes through a typed turn, speech, a
transcription, a spoken turn and a knowledge-base upload, through a real `medvoice serve` process and a real
`medvoice worker` (every pool, the real small models), both logging JSON; then every line of both logs is
searched for the canary's words. The logs must also be one JSON object per line with a correlation id."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from app import users as svc
from app.migrate import upgrade
from tests.conftest import ROOT, free_port, wait_for
from tests.consultation.shared import worker_env
from workers.core.db import session_scope
from workers.core.records import Role
from workers.core.settings import Settings

pytestmark = pytest.mark.slow

PASSWORD = "password-1234"
CANARY = ("lighthouse", "zebra", "purple")  # words no id, path or library message contains
DOC = """---
title: Purple lighthouse zebra care
date: 2025-03-01
---
# Purple lighthouse zebra care

The purple lighthouse zebra is treated with amoxicillin 500 mg three times daily for 5 days.
"""
QUESTION = "What dose of amoxicillin does the purple lighthouse zebra take?"
SPOKEN = "The purple lighthouse zebra takes amoxicillin."


def _canary_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(w in line.lower() for w in CANARY)]


@pytest.fixture
def stack(tmp_path, start_worker):
    url = f"sqlite:///{tmp_path / 'medvoice.db'}"
    upgrade(url)
    settings = Settings(database_url=url, data_dir=tmp_path / "data", kb_dir=tmp_path / "data" / "knowledge")
    env = {**worker_env(settings), "MEDVOICE_LOG_FORMAT": "json", "MEDVOICE_LOG_LEVEL": "INFO"}
    worker = start_worker("all", timeout_s=600, **env)
    port = free_port()
    api_log = tmp_path / "api.log"
    with api_log.open("wb") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if api.poll() is not None:
            raise RuntimeError(f"the API exited: {api_log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, "medvoice serve")
        with session_scope(url) as db:
            svc.create_user(db, "ann", PASSWORD, Role.clinician)
            svc.create_user(db, "root", PASSWORD, Role.admin)
        yield {"base": base, "api": api, "api_log": api_log, "worker": worker}
    finally:
        if api.poll() is None:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(30)


def _login(c: httpx.Client, name: str) -> dict[str, str]:
    r = c.post("/v1/auth/token", data={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _follow(c: httpx.Client, h: dict[str, str], turn_id: str) -> str:
    """The turn's events as a browser would read them: a ticket, then the stream without a header."""
    ticket = c.post(f"/v1/turns/{turn_id}/events/ticket", headers=h).json()["ticket"]
    with c.stream("GET", f"/v1/turns/{turn_id}/events", params={"ticket": ticket}, timeout=600) as r:
        assert r.status_code == 200
        body = "".join(r.iter_text())
    assert "event: done" in body, body[-2000:]
    return body


def test_no_canary_text_in_any_log(stack):
    with httpx.Client(base_url=stack["base"], timeout=600) as c:
        admin, ann = _login(c, "root"), _login(c, "ann")
        up = c.post(
            "/v1/knowledge/documents", headers=admin, files={"file": ("doc1.md", DOC.encode(), "text/markdown")}
        )
        assert up.status_code == 201, up.text
        assert up.json()["status"] == "added"
        found = c.post("/v1/knowledge/search", headers=ann, json={"query": "purple lighthouse zebra amoxicillin"})
        assert found.status_code == 200, found.text

        cid = c.post("/v1/consultations", headers=ann, json={}).json()["id"]
        typed = c.post(f"/v1/consultations/{cid}/turns", headers=ann, json={"text": QUESTION})
        assert typed.status_code == 202, typed.text
        typed_id = typed.json()["turn_id"]
        _follow(c, ann, typed_id)
        answer = c.get(f"/v1/turns/{typed_id}", headers=ann).json()["answer"]
        assert "zebra" in answer.lower()  # the answer itself carries the canary: it went all the way through

        speech = c.post(
            "/v1/audio/speech",
            headers=ann,
            json={"model": "tts-1", "voice": "alloy", "input": SPOKEN, "response_format": "wav"},
        )
        assert speech.status_code == 200, speech.text
        wav = speech.content
        heard = c.post(
            "/v1/audio/transcriptions",
            headers=ann,
            files={"file": ("q.wav", wav, "audio/wav")},
            data={"model": "whisper-1", "language": "en", "response_format": "json"},
        )
        assert heard.status_code == 200, heard.text
        assert any(w in heard.json()["text"].lower() for w in CANARY), heard.json()

        spoken = c.post(f"/v1/consultations/{cid}/turns", headers=ann, files={"file": ("q.wav", wav, "audio/wav")})
        assert spoken.status_code == 202, spoken.text
        spoken_id = spoken.json()["turn_id"]
        _follow(c, ann, spoken_id)
        transcript = c.get(f"/v1/turns/{spoken_id}", headers=ann).json()["transcript"] or ""
        assert any(w in transcript.lower() for w in CANARY), transcript

    time.sleep(1)  # the last task's lines (succeeded in ...) reach the worker's log
    os.killpg(stack["api"].pid, signal.SIGTERM)
    stack["api"].wait(30)
    api_log = stack["api_log"].read_text(errors="replace")
    worker_log = stack["worker"].log()
    assert _canary_lines(api_log) == [], "the API logged clinical text"
    assert _canary_lines(worker_log) == [], "the worker logged clinical text"

    api_lines = [json.loads(line) for line in api_log.splitlines() if line.strip()]
    assert all("cid" in line for line in api_lines)
    turn_lines = [line for line in api_lines if line.get("logger") == "uvicorn.access" and typed_id in line["msg"]]
    assert turn_lines and all(re.fullmatch(r"[0-9a-f]{32}", line["request_id"]) for line in turn_lines)
    assert not any("mvt_" in line["msg"] for line in api_lines)  # tickets redacted from access lines

    # Every line one JSON event; but Celery prints its shutdown notice straight to stderr ("worker: Warm shutdown").
    lines = [line for line in worker_log.splitlines() if line.strip() and not line.startswith("worker: ")]
    events = [json.loads(line) for line in lines]
    assert events, worker_log[-3000:]
    assert all("cid" in e for e in events)
    for stage in ("rag.turn", "llm.turn", "tts.turn"):
        done = [e for e in events if e["msg"].startswith(f"Task {stage}[") and "succeeded" in e["msg"]]
        assert any(e.get("turn_id") == typed_id and e.get("task_id") for e in done), (stage, done)
    asr = [e for e in events if e["msg"].startswith("Task asr.turn[") and "succeeded" in e["msg"]]
    assert any(e.get("turn_id") == spoken_id for e in asr), asr
