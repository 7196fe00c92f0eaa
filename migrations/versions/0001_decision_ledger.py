"""Decision ledger: decisions (unique event_id) and dead letters (unique position).

Written by hand to match ``app.store.tables``; ``tests/test_store.py`` compares the
migrated schema with the metadata.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only autoincrements an INTEGER PRIMARY KEY.
_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Plain types, not the application's TypeDecorators: a migration must not change when
# application code does. UTCDateTime is DateTime(timezone=True) at the DDL level.
_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", _BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("partition_key", sa.String(128), nullable=False),
        sa.Column("decision", sa.String(64), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("model_versions", sa.JSON(), nullable=False),
        sa.Column("rules_fired", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("occurred_at", _TIMESTAMP, nullable=False),
        sa.Column("decided_at", _TIMESTAMP, nullable=False),
        sa.Column("published_at", _TIMESTAMP, nullable=True),
        sa.Column("source_topic", sa.String(255), nullable=False),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
        sa.UniqueConstraint("event_id", name="uq_decisions_event_id"),
    )
    op.create_index("ix_decisions_event_type", "decisions", ["event_type"])
    op.create_index("ix_decisions_decided_at", "decisions", ["decided_at"])

    op.create_table(
        "dead_letters",
        sa.Column("id", _BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("source_topic", sa.String(255), nullable=False),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("published_at", _TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
        sa.UniqueConstraint(
            "source_topic",
            "source_partition",
            "source_offset",
            name="uq_dead_letters_position",
        ),
    )


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_index("ix_decisions_decided_at", table_name="decisions")
    op.drop_index("ix_decisions_event_type", table_name="decisions")
    op.drop_table("decisions")
