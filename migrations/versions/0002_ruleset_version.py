"""Decisions record the ruleset version that made them; index on occurred_at for replays.

``ruleset_version`` is the content hash of the rule files in service when the event was
decided (hot reload swaps rules between batches). ``occurred_at`` is what window
rebuilds and ``arbiter rules backtest`` scan by.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 09:30:00
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
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(
            sa.Column("ruleset_version", sa.String(32), nullable=False, server_default="")
        )
    op.create_index("ix_decisions_occurred_at", "decisions", ["occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_decisions_occurred_at", table_name="decisions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("ruleset_version")
