"""Alembic owns the schema: upgrade head and downgrade base work on SQLite and PostgreSQL, and the
migrations match the SQLAlchemy models exactly."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.migrate import downgrade, upgrade
from app.readiness import alembic_head
from workers.records import Base

TABLES = {"users", "consultations", "turns", "citations", "audit_events"}


def test_upgrade_downgrade_roundtrip(any_db_url):
    upgrade(any_db_url)
    engine = create_engine(any_db_url)
    try:
        assert TABLES <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn)
            assert ctx.get_current_revision() == alembic_head()
            # The models and the migrations describe the same schema (no pending autogenerate diff).
            assert compare_metadata(ctx, Base.metadata) == []
        downgrade(any_db_url, "base")
        assert not TABLES & set(inspect(engine).get_table_names())
        upgrade(any_db_url)  # and back up again: downgrade left nothing behind that blocks it
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_is_idempotent(sqlite_url):
    upgrade(sqlite_url)
    upgrade(sqlite_url)
