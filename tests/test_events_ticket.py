"""A browser's EventSource cannot send an Authorization header: the turn's event stream takes a short-lived,
single-use ticket minted by an authenticated request instead. Real app, real Redis, real SQLite."""

from __future__ import annotations

import time

import pytest

from app import tickets
from app import users as svc
from workers.core import events
from workers.core.db import session_scope
from workers.core.event_schema import Done
from workers.core.records import Consultation, Role, Turn, TurnStatus, new_id

PASSWORD = "correct-horse-battery"


@pytest.fixture
def world(client, settings):
    """Two clinicians, an admin, and a finished turn of ann's whose stream holds `done`."""
    with session_scope(settings.resolved_database_url) as db:
        ann = svc.create_user(db, "ann", PASSWORD, Role.clinician)
        svc.create_user(db, "ben", PASSWORD, Role.clinician)
        svc.create_user(db, "root", PASSWORD, Role.admin)
        c = Consultation(id=new_id(), owner_id=ann.id)
        db.add(c)
        db.flush()
        turn = Turn(id=new_id(), consultation_id=c.id, index=1, status=TurnStatus.done, input_kind="text")
        db.add(turn)
        turn_id, ann_id = turn.id, ann.id
    events.emit(turn_id, Done(status="done"), r=events.client(settings.redis_url))
    heads = {}
    for name in ("ann", "ben", "root"):
        r = client.post("/v1/auth/token", data={"username": name, "password": PASSWORD})
        heads[name] = {"Authorization": f"Bearer {r.json()['access_token']}"}
    return {"turn": turn_id, "ann_id": ann_id, "h": heads}


def mint(client, world, who="ann", turn=None):
    return client.post(f"/v1/turns/{turn or world['turn']}/events/ticket", headers=world["h"][who])


def test_a_ticket_opens_the_stream_once(client, world):
    r = mint(client, world)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ticket"].startswith("mvt_") and body["expires_in"] == 60
    assert body["events"] == f"/v1/turns/{world['turn']}/events?ticket={body['ticket']}"
    stream = client.get(body["events"])  # no Authorization header
    assert stream.status_code == 200 and "event: done" in stream.text
    again = client.get(body["events"])
    assert again.status_code == 401 and "used" in again.json()["detail"]


def test_the_header_still_works_and_no_credential_is_401(client, world):
    r = client.get(f"/v1/turns/{world['turn']}/events", headers=world["h"]["ann"])
    assert r.status_code == 200 and "event: done" in r.text
    assert client.get(f"/v1/turns/{world['turn']}/events").status_code == 401


def test_a_ticket_is_for_one_turn(client, world, settings):
    with session_scope(settings.resolved_database_url) as db:
        c = db.query(Consultation).first()
        other = Turn(id=new_id(), consultation_id=c.id, index=2, status=TurnStatus.done, input_kind="text")
        db.add(other)
        other_id = other.id
    ticket = mint(client, world).json()["ticket"]
    r = client.get(f"/v1/turns/{other_id}/events", params={"ticket": ticket})
    assert r.status_code == 401 and "another turn" in r.json()["detail"]


def test_bad_expired_and_foreign_tickets_are_refused(client, world, settings):
    url = f"/v1/turns/{world['turn']}/events"
    for bad in ("", "garbage", "mvt_" + "x" * 43, "mvt_" + "y" * 200):
        assert client.get(url, params={"ticket": bad}).status_code == 401
    r = events.client(settings.redis_url)
    # A ticket minted for another purpose (a live WebSocket's) does not open an event stream.
    realtime = tickets.mint(r, world["ann_id"], "realtime", 60, {"turn_id": world["turn"]})
    assert client.get(url, params={"ticket": realtime}).status_code == 401
    short = tickets.mint(r, world["ann_id"], "turn-events", 1, {"turn_id": world["turn"]})
    time.sleep(2.1)  # Redis expires it (TTL 1 s)
    assert client.get(url, params={"ticket": short}).status_code == 401


def test_only_who_may_read_the_turn_gets_a_ticket(client, world):
    assert mint(client, world, "ben").status_code == 404  # another clinician's turn
    assert mint(client, world, "root").status_code == 200  # an admin may read any
    assert client.post(f"/v1/turns/{world['turn']}/events/ticket").status_code == 401
    assert mint(client, world, turn="no-such-turn").status_code == 404


def test_disabling_the_user_voids_their_tickets(client, world, settings):
    ticket = mint(client, world).json()["ticket"]
    with session_scope(settings.resolved_database_url) as db:
        svc.set_active(db, "ann", False)
    r = client.get(f"/v1/turns/{world['turn']}/events", params={"ticket": ticket})
    assert r.status_code == 401 and "disabled" in r.json()["detail"]


def test_a_password_change_after_minting_revokes_the_ticket(client, world, settings):
    ticket = mint(client, world).json()["ticket"]
    time.sleep(0.01)
    with session_scope(settings.resolved_database_url) as db:
        svc.set_password(db, "ann", "a-new-password-123")
    r = client.get(f"/v1/turns/{world['turn']}/events", params={"ticket": ticket})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_minting_and_reading_are_audited(client, world, settings):
    from workers.core.records import AuditEvent

    ticket = mint(client, world).json()["ticket"]
    client.get(f"/v1/turns/{world['turn']}/events", params={"ticket": ticket})
    with session_scope(settings.resolved_database_url) as db:
        actions = [e.action for e in db.query(AuditEvent).filter_by(record_id=world["turn"]).order_by(AuditEvent.id)]
    assert actions[-2:] == ["turn.events_ticket", "turn.events"]
