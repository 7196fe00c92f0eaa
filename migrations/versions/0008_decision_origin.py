"""Decisions say where they came from: ``origin`` is 'decided' or 'imported'.

``arbiter import`` writes history (past events with their outcomes) straight into the
ledger. Those rows were never decided by Arbiter: they are marked ``origin =
'imported'`` (with the decision ``imported``) so counts, latencies and the drift monitor
leave them out, while the trainer and ``arbiter rules backtest`` read them. Every row
already stored was decided, hence the server default.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ADD COLUMN with a constant default: no table rewrite on PostgreSQL 11+ or SQLite.
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(
            sa.Column("origin", sa.String(16), nullable=False, server_default="decided")
        )


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("origin")
