"""Consultation records: owner isolation (404 for others), admin access, and an audit event per access."""

import pytest

from app import users as svc
from workers.core.db import session_scope
from workers.core.records import AuditEvent, Role

PW = "password-1234"


@pytest.fixture
def tokens(client, settings):
    with session_scope(settings.resolved_database_url) as db:
        for name, role in (("ann", Role.clinician), ("ben", Role.clinician), ("root", Role.admin)):
            svc.create_user(db, name, PW, role)
    return {
        name: {
            "Authorization": "Bearer "
            + client.post("/v1/auth/token", data={"username": name, "password": PW}).json()["access_token"]
        }
        for name in ("ann", "ben", "root")
    }


def audit_actions(settings, record_id):
    with session_scope(settings.resolved_database_url) as db:
        rows = db.query(AuditEvent).filter_by(record_id=record_id).order_by(AuditEvent.id)
        return [(e.action, e.actor_role) for e in rows]


def test_isolation_and_audit(client, tokens, settings):
    r = client.post("/v1/consultations", json={"title": "knee pain"}, headers=tokens["ann"])
    assert r.status_code == 201
    cid = r.json()["id"]

    assert client.get(f"/v1/consultations/{cid}", headers=tokens["ann"]).status_code == 200
    assert client.get(f"/v1/consultations/{cid}", headers=tokens["ben"]).status_code == 404
    assert [c["id"] for c in client.get("/v1/consultations", headers=tokens["ben"]).json()] == []
    admin_read = client.get(f"/v1/consultations/{cid}", headers=tokens["root"])
    assert admin_read.status_code == 200 and admin_read.json()["owner_id"] != ""

    assert audit_actions(settings, cid) == [
        ("consultation.create", "clinician"),
        ("consultation.read", "clinician"),
        ("consultation.read", "admin"),
    ]


def test_unknown_id_and_bad_body(client, tokens):
    assert client.get("/v1/consultations/does-not-exist", headers=tokens["ann"]).status_code == 404
    r = client.post(
        "/v1/consultations", content=b"{not json", headers={**tokens["ann"], "Content-Type": "application/json"}
    )
    assert r.status_code == 422
    r = client.post("/v1/consultations", json={"title": "x" * 500}, headers=tokens["ann"])
    assert r.status_code == 422
    # The service is still up and earlier records are intact.
    assert client.post("/v1/consultations", json={}, headers=tokens["ann"]).status_code == 201
    assert len(client.get("/v1/consultations", headers=tokens["ann"]).json()) == 1


def test_requires_auth(client):
    assert client.post("/v1/consultations", json={}).status_code == 401
