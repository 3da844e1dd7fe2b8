"""SQL records on SQLite and PostgreSQL: relationships, constraints, cascades."""

import pytest
from sqlalchemy.exc import IntegrityError

from app import users as svc
from app.migrate import upgrade
from workers.core.db import session_scope
from workers.core.records import AuditEvent, Citation, Consultation, Role, Turn, TurnStatus


def test_records_roundtrip_and_cascade(any_db_url):
    upgrade(any_db_url)
    with session_scope(any_db_url) as db:
        doc = svc.create_user(db, "dr-ada", "long-password", Role.clinician)
        c = Consultation(owner_id=doc.id, title="follow-up")
        db.add(c)
        db.flush()
        t = Turn(
            consultation_id=c.id, index=0, transcript="how much paracetamol", language="en", timings={"asr_s": 0.4}
        )
        t.citations.append(Citation(n=1, chunk_id="doc1:0", document_id="doc1", title="Paracetamol", score=0.81))
        db.add(t)
        db.add(
            AuditEvent(
                actor_id=doc.id,
                actor_role="clinician",
                action="consultation.create",
                record_type="consultation",
                record_id=c.id,
                detail={},
            )
        )
        cid, uid = c.id, doc.id
    with session_scope(any_db_url) as db:
        c = db.get(Consultation, cid)
        assert c.owner.username == "dr-ada"
        assert c.turns[0].status == TurnStatus.queued
        assert c.turns[0].timings == {"asr_s": 0.4}
        assert c.turns[0].citations[0].document_id == "doc1"
        db.delete(c)
    with session_scope(any_db_url) as db:
        assert db.query(Turn).count() == 0 and db.query(Citation).count() == 0
        assert db.query(AuditEvent).count() == 1  # the audit trail outlives the record
        assert db.get(type(doc), uid) is not None


def test_turn_index_unique_per_consultation(any_db_url):
    upgrade(any_db_url)
    with pytest.raises(IntegrityError), session_scope(any_db_url) as db:
        u = svc.create_user(db, "dr-bo", "long-password", Role.clinician)
        c = Consultation(owner_id=u.id)
        db.add(c)
        db.flush()
        db.add_all([Turn(consultation_id=c.id, index=0), Turn(consultation_id=c.id, index=0)])


def test_user_with_consultations_cannot_be_deleted(any_db_url):
    upgrade(any_db_url)
    with session_scope(any_db_url) as db:
        u = svc.create_user(db, "dr-cy", "long-password", Role.clinician)
        db.add(Consultation(owner_id=u.id))
    with pytest.raises(svc.UserError, match="disable"), session_scope(any_db_url) as db:
        svc.delete_user(db, "dr-cy")
