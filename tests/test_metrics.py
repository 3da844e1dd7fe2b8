"""The API's /metrics: who may read it, route templates (never raw paths), queue depths read from Redis at scrape
time (kombu's priority lists too), stalled turns counted by the reaper, and no user names in what it serves."""

from __future__ import annotations

import re

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app import users as svc
from app.main import create_app
from tests.test_reaper import seed
from workers.core.db import session_scope
from workers.core.records import Role

LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("10.20.30.40", 50000)


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name]


def token(c: TestClient, settings, name: str, role: Role) -> dict[str, str]:
    with session_scope(settings.resolved_database_url) as db:
        svc.create_user(db, name, "password-1234", role)
    r = c.post("/v1/auth/token", data={"username": name, "password": "password-1234"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_metrics_need_loopback_or_an_admin(settings):
    app = create_app(settings)
    with TestClient(app, client=REMOTE) as remote:
        admin = token(remote, settings, "metrics-admin", Role.admin)
        clinician = token(remote, settings, "metrics-clinician", Role.clinician)
        assert remote.get("/metrics").status_code == 401
        assert remote.get("/metrics", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
        assert remote.get("/metrics", headers=clinician).status_code == 403
        r = remote.get("/metrics", headers=admin)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        # the names of the users who signed in are nowhere in it
        assert "metrics-admin" not in r.text and "metrics-clinician" not in r.text
    with TestClient(app, client=LOOPBACK) as local:
        assert local.get("/metrics").status_code == 200
    with TestClient(create_app(settings.model_copy(update={"metrics_public": True})), client=REMOTE) as public:
        assert public.get("/metrics").status_code == 200


def test_requests_are_counted_by_route_template(settings):
    with TestClient(create_app(settings), client=LOOPBACK) as c:
        turn_id = "0f8c2a4e-1111-4222-8333-944445555666"
        assert c.get(f"/v1/turns/{turn_id}").status_code == 401
        assert c.get("/no/such/page-7361").status_code == 404
        text = c.get("/metrics").text
    routes = {(s["route"], s["status"]) for s, _ in samples(text, "medvoice_http_requests_total")}
    assert ("/v1/turns/{turn_id}", "401") in routes
    assert ("unmatched", "404") in routes
    assert turn_id not in text and "page-7361" not in text  # raw paths never become labels
    assert any(
        s["route"] == "/v1/turns/{turn_id}" for s, _ in samples(text, "medvoice_http_request_duration_seconds_count")
    )


def test_queue_depth_counts_every_priority_list(settings, redis_url):
    r = redis.Redis.from_url(redis_url)
    keys = ["llm", "llm\x06\x163", "llm\x06\x169"]  # kombu's Redis transport: <queue>\x06\x16<priority step>
    r.delete(*keys)
    try:
        r.lpush(keys[0], "a")
        r.lpush(keys[1], "b", "c")
        r.lpush(keys[2], "d")
        with TestClient(create_app(settings), client=LOOPBACK) as c:
            text = c.get("/metrics").text
    finally:
        r.delete(*keys)
    depth = {s["queue"]: v for s, v in samples(text, "medvoice_queue_depth_messages")}
    assert depth["llm"] == 4
    assert set(depth) == {"asr", "live", "rag", "llm", "tts"}


def test_the_reaper_counts_stalled_turns(settings):
    from workers.reaper import reap

    def stalled(text: str) -> float:
        return sum(v for s, v in samples(text, "medvoice_turns_total") if s["outcome"] == "stalled")

    with TestClient(create_app(settings), client=LOOPBACK) as c:
        before = stalled(c.get("/metrics").text)
        seed(settings.resolved_database_url)
        assert len(reap(settings.model_copy(update={"consult_stall_after_s": 60.0}))) == 2
        after = c.get("/metrics").text
    assert stalled(after) == before + 2
    assert re.search(r'medvoice_turns_total\{code="turn_stalled",outcome="stalled"\}', after)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_loopback_addresses(host):
    from app.metrics import loopback

    assert loopback(host)
    assert not loopback("192.168.1.5") and not loopback(None) and not loopback("testclient")
