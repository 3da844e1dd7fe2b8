"""What the OpenAI-compatible tests share: a real uvicorn serving the app, and the official clients (sync and
async) with one of our JWTs as the API key. Each test module wraps these in its own module fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import openai

from tests.conftest import serve_in_thread
from workers.core.settings import Settings


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """A real HTTP server (uvicorn in a thread) serving the app on a free port: the openai client needs one."""
    from app.main import create_app

    server, thread, port = serve_in_thread(create_app(settings))
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(15)


def key(tokens: dict[str, dict[str, str]], user: str = "ann") -> str:
    return tokens[user]["Authorization"].removeprefix("Bearer ")


def sync_client(base_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=300)


def async_client(base_url: str, api_key: str) -> openai.AsyncOpenAI:
    """The async client, for `async with` inside a coroutine run by asyncio.run."""
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=300)
