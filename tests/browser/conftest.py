"""Fixtures for the browser tests: the consultation tests' database, users, worker (every pool, the real small
models) and knowledge base, a real uvicorn serving the app, and headless Chromium driven by Selenium."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.conftest import free_port, wait_for

# The consultation fixtures, shared rather than copied: one module-scoped worker and knowledge base.
from tests.consultation.conftest import api, knowledge, pipeline_worker, settings, speech, tokens  # noqa: F401


@pytest.fixture(scope="module")
def server(settings) -> Iterator[str]:  # noqa: F811 - the imported fixture, as pytest passes it
    import uvicorn

    from app.main import create_app

    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_for(lambda: srv.started, 30, "uvicorn")
    yield f"127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(15)
