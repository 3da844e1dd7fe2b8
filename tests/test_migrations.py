"""Alembic owns the schema: upgrade head and downgrade base work on SQLite and PostgreSQL, and the
migrations match the SQLAlchemy models exactly."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from app.migrate import downgrade, upgrade
from app.readiness import alembic_head
from workers.core.records import Base

TABLES = {"users", "consultations", "turns", "citations", "audit_events"}


def test_upgrade_downgrade_roundtrip(any_db_url):
    upgrade(any_db_url)
    engine = create_engine(any_db_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn)
            assert ctx.get_current_revision() == alembic_head()
            # The models and the migrations describe the same schema (no pending autogenerate diff).
            assert compare_metadata(ctx, Base.metadata) == []
        downgrade(any_db_url, "base")
        assert not TABLES & set(inspect(engine).get_table_names())
        upgrade(any_db_url)  # and back up again: downgrade left nothing behind that blocks it
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_upgrade_is_idempotent(sqlite_url):
    upgrade(sqlite_url)
    upgrade(sqlite_url)


def test_0002_keeps_every_recorded_turn(any_db_url):
    """Upgrading a database with turns in it (and back) loses none of them: the disclaimer is a new column,
    empty for answers given before it existed."""
    upgrade(any_db_url, "0001")
    engine = create_engine(any_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, username, password_hash, role, is_active, created_at) "
                    "VALUES ('u1', 'ann', 'x', 'clinician', true, CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO consultations (id, owner_id, status, created_at, updated_at) "
                    "VALUES ('c1', 'u1', 'open', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    'INSERT INTO turns (id, consultation_id, "index", status, input_kind, answer, timings,'
                    " guard_fired, created_at, updated_at) VALUES ('t1', 'c1', 0, 'done', 'text', "
                    "'Amoxicillin [1].', '{}', false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        upgrade(any_db_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT answer, disclaimer FROM turns")).all() == [("Amoxicillin [1].", None)]
        downgrade(any_db_url, "0001")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, answer FROM turns")).all() == [("t1", "Amoxicillin [1].")]
            assert "disclaimer" not in {c["name"] for c in inspect(conn).get_columns("turns")}
        downgrade(any_db_url, "base")
    finally:
        engine.dispose()
