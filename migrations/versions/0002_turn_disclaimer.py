"""turns.disclaimer: the medical disclaimer the answer was given with, kept with the record

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 10:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch: SQLite cannot drop a column in place (downgrade), so both directions use the same form.
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("disclaimer", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("disclaimer")
