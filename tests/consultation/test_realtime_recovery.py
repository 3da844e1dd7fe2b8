"""A live session whose worker pools are down hears why (an `error` event, the response failed) instead of
waiting for ever, and the next question is answered once a worker is back — in the same session."""

from __future__ import annotations

import asyncio

import pytest

from tests.consultation.realtime_client import Collector, client
from tests.consultation.shared import worker_env
from workers.core.db import session_scope
from workers.core.records import Turn

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow
QUESTION = "How is acute otitis media treated in adults?"


@pytest.fixture(scope="module")
def settings(settings):
    return settings.model_copy(update={"live_reply_idle_s": 6.0})


async def ask(conn, got: Collector, n: int) -> dict:
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]}
    )
    await conn.response.create()
    return (await got.until("response.done", n, timeout_s=300))[-1]["response"]


def test_pools_down_then_back(live_server, tokens, start_module_worker, settings) -> None:
    key = tokens["ann"]["Authorization"].removeprefix("Bearer ")

    async def main() -> tuple[dict, dict, Collector]:
        async with client(live_server, key).beta.realtime.connect(model="medvoice-realtime") as conn:
            got = Collector(conn)
            down = await ask(conn, got, 1)  # nothing consumes the queues yet
            await asyncio.to_thread(start_module_worker, "all", 240, True, **worker_env(settings))
            back = await ask(conn, got, 2)
            return down, back, got

    down, back, got = asyncio.run(main())
    assert down["status"] == "failed" and down["status_details"]["error"]["code"] == "pool_unavailable"
    assert any(e["error"]["code"] == "pool_unavailable" for e in got.of("error"))
    assert back["status"] == "completed"
    with session_scope(settings.resolved_database_url) as db:
        stale = db.get(Turn, down["metadata"]["turn_id"])
        assert stale.status.value == "error" and "pool_unavailable" in stale.error
        assert db.get(Turn, back["metadata"]["turn_id"]).status.value == "done"
