"""Table definitions of the decision ledger (SQLAlchemy Core, no ORM).

The ledger is where exactly-once happens: ``decisions.event_id`` is unique, and a
dead letter is unique on the Kafka position it came from, so a redelivered or
concurrently processed record can never produce a second row. Migration 0001 creates
exactly these tables; ``tests/test_store.py`` checks that the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

# Explicit constraint names keep the hand-written migrations and these definitions
# in step, and make a constraint violation readable in a log line.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only autoincrements an ``INTEGER PRIMARY KEY``; BIGINT there would need
# explicit ids. PostgreSQL gets a real 64-bit identity.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware timestamp that comes back aware (UTC) on every backend.

    PostgreSQL stores ``timestamptz`` and returns aware values already. SQLite has no
    timestamp type: SQLAlchemy stores text and silently drops the offset, so values
    are normalised to UTC before they are written and tagged UTC when read back.
    Naive datetimes are refused: their meaning depends on the writer's clock setting.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} cannot be stored: "
                "pass a timezone-aware datetime (e.g. datetime.now(UTC))"
            )
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("event_type", sa.String(32), nullable=False, index=True),
    sa.Column("partition_key", sa.String(128), nullable=False),
    sa.Column("decision", sa.String(64), nullable=False),
    sa.Column("actions", sa.JSON(), nullable=False),
    sa.Column("scores", sa.JSON(), nullable=False),
    sa.Column("model_versions", sa.JSON(), nullable=False),
    sa.Column("rules_fired", sa.JSON(), nullable=False),
    sa.Column("reasons", sa.JSON(), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("latency_ms", sa.Float(), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("decided_at", UTCDateTime(), nullable=False, index=True),
    # Set once the decision is on the decisions topic; NULL means a redelivery must
    # publish it again rather than decide again.
    sa.Column("published_at", UTCDateTime(), nullable=True),
    sa.Column("source_topic", sa.String(255), nullable=False),
    sa.Column("source_partition", sa.Integer(), nullable=False),
    sa.Column("source_offset", sa.BigInteger(), nullable=False),
    # Content hash of the rule files that made the decision (rules hot-reload).
    sa.Column("ruleset_version", sa.String(32), nullable=False, server_default=""),
    # Per model: how its score came about (top feature contributions) — migration 0003.
    sa.Column("explanations", sa.JSON(), nullable=False, server_default="{}"),
    # Scores of challengers in shadow ("name@vN" -> scores); they never change a decision.
    sa.Column("shadow_scores", sa.JSON(), nullable=False, server_default="{}"),
    # Where the row came from (migration 0008): 'decided' by Arbiter, or 'imported' by
    # `arbiter import` (history with no decision of ours; see app/store/imported.py).
    sa.Column("origin", sa.String(16), nullable=False, server_default="decided"),
)

# The values of ``decisions.origin``.
ORIGIN_DECIDED = "decided"
ORIGIN_IMPORTED = "imported"

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("source_topic", sa.String(255), nullable=False),
    sa.Column("source_partition", sa.Integer(), nullable=False),
    sa.Column("source_offset", sa.BigInteger(), nullable=False),
    # Readable only when the record parsed far enough to find it.
    sa.Column("event_id", sa.String(64), nullable=True),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("raw", sa.LargeBinary(), nullable=False),
    sa.Column("key", sa.LargeBinary(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("published_at", UTCDateTime(), nullable=True),
    # A redelivered bad record is the same position: store it once.
    sa.UniqueConstraint(
        "source_topic",
        "source_partition",
        "source_offset",
        name="uq_dead_letters_position",
    ),
)


# The model registry (migration 0003). Artifacts live in the models folder; a row holds
# what the version is, where its files are and their checksums, and its status. At most
# one champion per model name, enforced by a partial unique index on both backends.
model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
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
    sa.Column("files", sa.JSON(), nullable=False),  # file name -> sha256
    sa.UniqueConstraint("name", "version", name="uq_model_versions_name_version"),
    sa.CheckConstraint("status IN ('champion', 'challenger', 'retired')", name="status"),
    sa.Index(
        "uq_model_versions_one_champion",
        "name",
        unique=True,
        postgresql_where=sa.text("status = 'champion'"),
        sqlite_where=sa.text("status = 'champion'"),
    ),
)

# Every registry change, for `arbiter models show` and the audit trail.
model_events = sa.Table(
    "model_events",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, index=True),
    sa.Column("version", sa.Integer(), nullable=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False, server_default=""),
    sa.Column("at", UTCDateTime(), nullable=False),
)

# Outcomes (migration 0004): ground truth that arrives after a decision, joined to it by
# event_id. Kept whether or not the decision is known yet (an outcome may overtake its
# event); ``digest`` makes a redelivered outcome a no-op.
outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("event_id", sa.String(64), nullable=False, index=True),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("partition_key", sa.String(128), nullable=False),
    sa.Column("labels", sa.JSON(), nullable=False),
    sa.Column("observed_at", UTCDateTime(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("source", sa.String(128), nullable=True),
)

# Trainer runs (migration 0005): one row per training run, the experiment history —
# what it was given (window, rows, cleaning), what it tried (candidates), how the
# challenger and the champion did on the same holdout, and what was decided.
# ``outcomes_seen`` is the highest outcome id the run could see: "new outcomes since the
# last training" counts beyond it.
training_runs = sa.Table(
    "training_runs",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(64), nullable=False, index=True),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("outcomes_seen", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("summary", sa.JSON(), nullable=False),  # windows, rows, cleaning, candidates
    sa.Column("champion_version", sa.Integer(), nullable=True),
    sa.Column("challenger_version", sa.Integer(), nullable=True),
    sa.Column("champion_metrics", sa.JSON(), nullable=False),
    sa.Column("challenger_metrics", sa.JSON(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False, server_default=""),
    sa.Column("report", sa.Text(), nullable=False, server_default=""),
    sa.CheckConstraint(
        "status IN ('running', 'promoted', 'kept', 'skipped', 'failed', 'abandoned')",
        name="status",
    ),
)

# Leases (migration 0005): at most one holder of a named job at a time across processes
# (the trainer), taken and renewed with a conditional write, so two trainers never
# train and register the same model at once; an expired lease can be taken over.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

# API keys (migration 0006): only a hash of each key is kept. ``prefix`` (8 random
# characters, also part of the key) finds the row and names the key in listings; at most
# one active key per name, so `arbiter keys revoke NAME` is unambiguous.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False, unique=True),
    sa.Column("hash", sa.String(64), nullable=False),  # sha256 hex of the whole key
    sa.Column("scopes", sa.JSON(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    sa.Index(
        "uq_api_keys_active_name",
        "name",
        unique=True,
        postgresql_where=sa.text("revoked_at IS NULL"),
        sqlite_where=sa.text("revoked_at IS NULL"),
    ),
)

# Webhook deliveries (migration 0007): the outbox. Rows are written in the transaction
# that stores their decision (``Ledger.record``), one per (event, endpoint) —
# ``idempotency_key`` is unique, so a redelivered event never owes a second delivery —
# and sent by the relay (connectors/webhooks/relay.py), which claims due rows with a lease
# (``claimed_by``/``claimed_until``) so two relays never send the same row at once and a
# crashed relay's rows come back when its lease runs out. ``failed`` is the dead letter.
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False, index=True),
    sa.Column("endpoint", sa.String(64), nullable=False),
    sa.Column("idempotency_key", sa.String(160), nullable=False, unique=True),
    sa.Column("partition_key", sa.String(128), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("last_status", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.Column("claimed_by", sa.String(128), nullable=True),
    sa.Column("claimed_until", UTCDateTime(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
    # The relay's question: which pending rows are due.
    sa.Index("ix_deliveries_due", "status", "next_attempt_at"),
    # Per-key order: is an older pending row of this (endpoint, key) still there.
    sa.Index("ix_deliveries_order", "endpoint", "partition_key", "status"),
)
