"""Fixtures for the browser tests: the consultation tests' database, users, worker (every pool, the real small
models) and knowledge base, a real uvicorn serving the app, and headless Chromium driven by Selenium."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# The consultation fixtures, shared rather than copied: one module-scoped worker and knowledge base.
from tests.consultation.conftest import api, knowledge, pipeline_worker, settings, speech, tokens  # noqa: F401


@pytest.fixture(scope="module")
def server(settings) -> Iterator[str]:  # noqa: F811 - the imported fixture, as pytest passes it
    from tests.consultation.openai_server import serve

    with serve(settings) as base:
        yield base.removeprefix("http://").removesuffix("/v1")
