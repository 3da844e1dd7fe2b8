"""Sign-in throttling through the real HTTP app and a real Redis: per user name and per client address,
429 with Retry-After, shared by every API process (the counters live in Redis), and the same argon2 work
for unknown names as for known ones."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from app import security
from app import users as svc
from app.main import create_app
from app.routes.auth import throttle_keys
from workers.core import events
from workers.core.db import session_scope
from workers.core.records import Role

PASSWORD = "correct-horse-battery"


@pytest.fixture
def throttled(settings):
    return settings.model_copy(
        update={"login_max_failures_per_user": 3, "login_max_failures_per_address": 6, "login_window_s": 120}
    )


@pytest.fixture
def names(throttled):
    """Fresh user names per test (the counters live in the session's one Redis)."""
    tag = uuid.uuid4().hex[:8]
    out = {"clin": f"clin-{tag}", "other": f"other-{tag}"}
    with session_scope(throttled.resolved_database_url) as db:
        for name in out.values():
            svc.create_user(db, name, PASSWORD, Role.clinician)
    return out


def _client(settings, address: str) -> TestClient:
    return TestClient(create_app(settings), client=(address, 40000))


def _address() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


def login(client, username, password=PASSWORD):
    return client.post("/v1/auth/token", data={"username": username, "password": password})


def test_failures_per_user_name_end_in_429_with_retry_after(throttled, names):
    with _client(throttled, _address()) as c:
        for _ in range(3):
            assert login(c, names["clin"], "wrong-password").status_code == 401
        r = login(c, names["clin"])  # even the right password: the name is locked for the window
        assert r.status_code == 429, r.text
        retry = int(r.headers["Retry-After"])
        assert 1 <= retry <= 120
        assert "try again" in r.json()["detail"]
        # Another name from the same address is not locked by this one's failures.
        assert login(c, names["other"]).status_code == 200


def test_the_name_lock_is_shared_by_every_api_process(throttled, names):
    """Two app instances (as two uvicorn processes would be) see one count, because it is in Redis."""
    with _client(throttled, _address()) as a, _client(throttled, _address()) as b:
        for c in (a, b, a):
            assert login(c, names["clin"], "wrong-password").status_code == 401
        assert login(b, names["clin"]).status_code == 429


def test_unknown_names_are_throttled_like_known_ones(throttled):
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    with _client(throttled, _address()) as c:
        codes = [login(c, ghost).status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]


def test_failures_per_address_across_names(throttled, names):
    addr = _address()
    with _client(throttled, addr) as c:
        for i in range(6):  # six different names, each below its own limit
            assert login(c, f"nobody-{i}-{uuid.uuid4().hex[:6]}").status_code == 401
        r = login(c, names["clin"])
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    with _client(throttled, _address()) as elsewhere:  # the same account from another address still works
        assert login(elsewhere, names["clin"]).status_code == 200


def test_a_success_does_not_reset_the_address_count(throttled, names):
    """An attacker holding one valid account cannot wipe their address's failures by signing in with it."""
    addr = _address()
    with _client(throttled, addr) as c:
        for i in range(5):
            assert login(c, f"guess-{i}-{uuid.uuid4().hex[:6]}").status_code == 401
        assert login(c, names["other"]).status_code == 200  # their own account: fine...
        assert login(c, f"guess-5-{uuid.uuid4().hex[:6]}").status_code == 401  # ...the 6th failure still counts
        assert login(c, names["other"]).status_code == 429


def test_a_success_clears_its_own_name_count(throttled, names):
    with _client(throttled, _address()) as c:
        for _ in range(2):
            assert login(c, names["clin"], "wrong-password").status_code == 401
        assert login(c, names["clin"]).status_code == 200
        for _ in range(2):  # two more failures are again below the limit of three
            assert login(c, names["clin"], "wrong-password").status_code == 401
        assert login(c, names["clin"]).status_code == 200


def test_user_names_are_case_folded_and_hashed_in_redis(throttled, names):
    with _client(throttled, _address()) as c:
        for spelled in (names["clin"].upper(), names["clin"], names["clin"].title()):
            assert login(c, spelled, "wrong-password").status_code == 401
        assert login(c, names["clin"]).status_code == 429
    r = events.client(throttled.redis_url)
    user_key, _ = throttle_keys(names["clin"], "x")
    assert int(r.get(user_key)) == 3
    assert not any(names["clin"] in str(k) for k in r.scan_iter("medvoice:login:*"))


def test_redis_down_refuses_sign_in_with_503(throttled, names):
    down = throttled.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with _client(down, _address()) as c:
        r = login(c, names["clin"])
    assert r.status_code == 503 and "Redis" in r.json()["detail"]


def test_unknown_names_verify_against_a_hash_of_the_same_cost():
    """The dummy hash has the parameters (memory, time, parallelism) of a real one, so verifying it costs the
    same; bench/login_timing.py measures the two medians."""
    from argon2 import extract_parameters

    assert security.verify_unknown_user("whatever") is False
    assert extract_parameters(security._dummy_hash()) == extract_parameters(security.hash_password("x"))
