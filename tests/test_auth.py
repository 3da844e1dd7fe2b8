"""JWT auth: every way a token can be wrong is refused with 401/403, through the real HTTP app."""

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from app import users as svc
from workers.core.db import session_scope
from workers.core.records import Role, User

PASSWORD = "correct-horse-battery"


@pytest.fixture
def accounts(settings):
    with session_scope(settings.resolved_database_url) as db:
        svc.create_user(db, "clin", PASSWORD, Role.clinician)
        svc.create_user(db, "boss", PASSWORD, Role.admin)


def login(client, username, password=PASSWORD):
    return client.post("/v1/auth/token", data={"username": username, "password": password})


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def clin_token(client, accounts):
    r = login(client, "clin")
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_login_and_me(client, clin_token, settings):
    claims = jwt.decode(clin_token, settings.jwt_secret, algorithms=["HS256"], issuer=settings.jwt_issuer)
    assert set(claims) >= {"sub", "role", "iat", "exp", "jti", "iss"}
    assert claims["role"] == "clinician"
    me = client.get("/v1/auth/me", headers=bearer(clin_token))
    assert me.status_code == 200
    assert me.json()["username"] == "clin" and me.json()["role"] == "clinician"


def test_wrong_password_and_unknown_user(client, accounts):
    assert login(client, "clin", "nope-nope-nope").status_code == 401
    assert login(client, "ghost").status_code == 401
    assert client.post("/v1/auth/token", data={"username": "clin"}).status_code == 422


def test_missing_token(client, accounts):
    r = client.get("/v1/auth/me")
    assert r.status_code == 401 and "missing" in r.json()["detail"]


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "Bearer", "eyJhbGciOiJIUzI1NiJ9.e30"])
def test_malformed_token(client, accounts, token):
    r = client.get("/v1/auth/me", headers=bearer(token))
    assert r.status_code == 401


def test_expired_token(client, accounts, settings):
    with session_scope(settings.resolved_database_url) as db:
        uid = svc.get_by_username(db, "clin").id
    past = datetime.now(UTC) - timedelta(hours=2)
    token = jwt.encode(
        {
            "iss": settings.jwt_issuer,
            "sub": uid,
            "role": "clinician",
            "iat": past,
            "exp": past + timedelta(minutes=5),
            "jti": "x",
        },
        settings.jwt_secret,
        algorithm="HS256",
    )
    r = client.get("/v1/auth/me", headers=bearer(token))
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_bad_signature(client, clin_token):
    head, body, sig = clin_token.split(".")
    forged = jwt.encode(
        jwt.decode(clin_token, options={"verify_signature": False}), "another-secret-entirely", algorithm="HS256"
    )
    for token in (forged, f"{head}.{body}.{sig[::-1]}"):
        r = client.get("/v1/auth/me", headers=bearer(token))
        assert r.status_code == 401


def test_alg_none_is_refused(client, clin_token):
    claims = jwt.decode(clin_token, options={"verify_signature": False})
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    r = client.get("/v1/auth/me", headers=bearer(token))
    assert r.status_code == 401


def test_tampered_role_claim(client, clin_token):
    head, body, sig = clin_token.split(".")
    claims = jwt.decode(clin_token, options={"verify_signature": False})
    claims["role"] = "admin"
    r = client.get("/v1/admin/pools", headers=bearer(f"{head}.{b64(claims)}.{sig}"))
    assert r.status_code == 401


def test_role_changed_in_db_invalidates_old_claim(client, clin_token, settings):
    with session_scope(settings.resolved_database_url) as db:
        svc.get_by_username(db, "clin").role = Role.admin
    assert client.get("/v1/auth/me", headers=bearer(clin_token)).status_code == 401


def test_clinician_forbidden_on_admin_route(client, clin_token):
    r = client.get("/v1/admin/pools", headers=bearer(clin_token))
    assert r.status_code == 403 and "admin" in r.json()["detail"]


def test_disabled_user_token_stops_working(client, clin_token, settings):
    assert client.get("/v1/auth/me", headers=bearer(clin_token)).status_code == 200
    with session_scope(settings.resolved_database_url) as db:
        svc.set_active(db, "clin", False)
    r = client.get("/v1/auth/me", headers=bearer(clin_token))
    assert r.status_code == 401 and "disabled" in r.json()["detail"]
    assert login(client, "clin").status_code == 401
    with session_scope(settings.resolved_database_url) as db:
        svc.set_active(db, "clin", True)
    # Re-enabling does not revive tokens issued before the account was disabled.
    assert client.get("/v1/auth/me", headers=bearer(clin_token)).status_code == 401
    assert login(client, "clin").status_code == 200


def test_deleted_user_token_stops_working(client, clin_token, settings):
    with session_scope(settings.resolved_database_url) as db:
        svc.delete_user(db, "clin")
    r = client.get("/v1/auth/me", headers=bearer(clin_token))
    assert r.status_code == 401 and "no longer exists" in r.json()["detail"]


def test_password_change_revokes_tokens(client, clin_token, settings):
    with session_scope(settings.resolved_database_url) as db:
        svc.set_password(db, "clin", "a-brand-new-password")
    assert client.get("/v1/auth/me", headers=bearer(clin_token)).status_code == 401
    assert login(client, "clin").status_code == 401
    assert login(client, "clin", "a-brand-new-password").status_code == 200


def test_password_is_argon2_hashed(settings, accounts):
    with session_scope(settings.resolved_database_url) as db:
        u = db.query(User).filter_by(username="clin").one()
        assert u.password_hash.startswith("$argon2") and PASSWORD not in u.password_hash
