"""/readyz goes unready, and says why, when a pool stops consuming (its own workers: no shared pools)."""

import pytest

from workers.core.settings import POOLS


@pytest.fixture
def own_pools(start_worker):
    """Pools this test may stop without disturbing the others."""
    return {pool: start_worker(pool) for pool in POOLS}


def test_readyz_reports_missing_pool(client, own_pools):
    pools = own_pools
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ready"] is True and body["missing"] == []
    for pool, worker in pools.items():
        assert worker.name in body["checks"]["pools"]["consumers"][pool]

    pools["llm"].stop()
    r = client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["ready"] is False and body["missing"] == ["pools"]
    assert "llm" in body["checks"]["pools"]["detail"]
    assert body["checks"]["pools"]["consumers"]["llm"] == []
