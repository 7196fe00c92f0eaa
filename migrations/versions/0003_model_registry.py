"""The model registry, and what each decision's models said beside its scores.

``model_versions`` holds every trained version (status champion / challenger / retired,
shadow flag, training window, features, metrics, artifact files and checksums);
``model_events`` is its audit trail. ``decisions`` gains ``explanations`` (top feature
contributions per model) and ``shadow_scores`` (what challengers in shadow said).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.store.tables import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("explanations", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("shadow_scores", sa.JSON(), nullable=False, server_default="{}"))
    op.create_table(
        "model_versions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("family", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("promoted_at", UTCDateTime(), nullable=True),
        sa.Column("window_start", sa.String(40), nullable=False, server_default=""),
        sa.Column("window_end", sa.String(40), nullable=False, server_default=""),
        sa.Column("trained_on", sa.Text(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("artifact_path", sa.Text(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint("name", "version", name="uq_model_versions_name_version"),
        sa.CheckConstraint(
            "status IN ('champion', 'challenger', 'retired')", name="ck_model_versions_status"
        ),
    )
    op.create_index(
        "uq_model_versions_one_champion",
        "model_versions",
        ["name"],
        unique=True,
        postgresql_where=sa.text("status = 'champion'"),
        sqlite_where=sa.text("status = 'champion'"),
    )
    op.create_table(
        "model_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_events"),
    )
    op.create_index("ix_model_events_name", "model_events", ["name"])


def downgrade() -> None:
    op.drop_index("ix_model_events_name", table_name="model_events")
    op.drop_table("model_events")
    op.drop_index("uq_model_versions_one_champion", table_name="model_versions")
    op.drop_table("model_versions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("shadow_scores")
        batch.drop_column("explanations")
