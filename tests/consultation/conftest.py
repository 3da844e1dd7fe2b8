"""Fixtures for the consultation tests: one migrated database, data dir and API client per module, users,
and one `all`-pools worker process (ASR + RAG + LLM + TTS, the real small models) serving the module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.consultation.shared import KB_DOC, worker_env
from workers.core.settings import Settings

PASSWORD = "password-1234"
USERS = {"ann": "clinician", "ben": "clinician", "root": "admin"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Module-wide: the API and the worker process share this database and data directory."""
    from app.migrate import upgrade

    root = tmp_path_factory.mktemp("consult")
    url = f"sqlite:///{root / 'medvoice.db'}"
    upgrade(url)
    return Settings(
        database_url=url,
        data_dir=root / "data",
        kb_dir=root / "data" / "knowledge",
        consult_max_audio_s=30.0,
        consult_max_audio_bytes=2_000_000,
        consult_sse_timeout_s=400.0,
        consult_sse_heartbeat_s=1.0,
    )


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def tokens(api, settings: Settings) -> dict[str, dict[str, str]]:
    from app import users as svc
    from workers.core.db import session_scope
    from workers.core.records import Role

    with session_scope(settings.resolved_database_url) as db:
        for name, role in USERS.items():
            svc.create_user(db, name, PASSWORD, Role(role))
    out = {}
    for name in USERS:
        r = api.post("/v1/auth/token", data={"username": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        out[name] = {"Authorization": f"Bearer {r.json()['access_token']}"}
    return out


@pytest.fixture(scope="module")
def live_server(settings: Settings) -> Iterator[str]:
    """host:port of a real uvicorn (in a thread) serving the app: WebSocket clients need a real server."""
    from tests.consultation.openai_server import serve

    with serve(settings) as base:
        yield base.removeprefix("http://").removesuffix("/v1")


@pytest.fixture(scope="module")
def pipeline_worker(start_module_worker, settings: Settings):
    """One worker consuming every pool (asr, rag, llm, tts): memory for one set of models, not four."""
    return start_module_worker("all", timeout_s=240, **worker_env(settings))


@pytest.fixture(scope="module")
def knowledge(pipeline_worker, settings: Settings) -> dict:
    """The knowledge base holds one short formulary page, ingested through the worker's rag.ingest."""
    from workers.celery_app import celery_app

    src = Path(settings.data_dir) / "kb-src" / "otitis.md"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(KB_DOC, encoding="utf-8")
    summary = celery_app.send_task("rag.ingest", args=[[str(src)]], kwargs={"source": "formulary"}).get(timeout=180)
    assert summary["added"] == 1 and summary["failed"] == 0, summary
    # The rag pool rebuilds BM25 and the ASR vocabulary in the background just after the write.
    wait_for(lambda: (Path(settings.kb_dir) / "vocabulary.json").exists(), 60, "the KB vocabulary")
    return summary


@pytest.fixture(scope="module")
def speech(pipeline_worker, settings: Settings):
    """speech(text) → WAV bytes of a Piper voice saying it, made by the worker's own tts.synthesize."""
    from workers.celery_app import celery_app

    def make(text: str) -> bytes:
        out = celery_app.send_task("tts.synthesize", kwargs={"text": text, "speed": 1.0}).get(timeout=120)
        return (Path(settings.data_dir) / out["audio_ref"]).read_bytes()

    return make
