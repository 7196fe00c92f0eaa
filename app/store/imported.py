"""History brought in by ``arbiter import``: past events and their outcomes, written
straight into the ledger (no broker), marked as imported rather than decided.

An imported event is a ``decisions`` row with ``origin = 'imported'`` and the decision
``imported``: no scores, no rules fired, no actions, latency 0. Its ``decided_at`` is its
event time (nothing decided it; this keeps it out of "recent decisions"), and
``published_at`` is the import's time, so the republish sweeper never sends it to a
topic. ``source_topic`` is ``import/<run>/<source>`` and ``source_offset`` the row number
in that source, so every row says which import and which row it came from.

Labels become ``outcomes`` rows (``source = 'import'``) observed at the event's stored
time, written in the same transaction. Both inserts skip what exists: the event id is
unique in the ledger and an outcome's digest in its table, so importing the same file
again adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.outcomes import content_digest
from app.store.sql import chunks, insert_or_skip
from app.store.tables import ORIGIN_IMPORTED
from app.store.tables import decisions as dec_table
from app.store.tables import outcomes as out_table

IMPORTED_DECISION = "imported"  # the decision column of an imported row
OUTCOME_SOURCE = "import"  # the source column of an imported outcome
TOPIC_PREFIX = "import/"
# The JSON columns that are empty on every imported row, written as SQL literals: a
# third of the time of an import went into serialising them row by row.
_CONSTANT_JSON: dict[str, Any] = {
    name: sa.literal_column(f"'{text}'")
    for name, text in (
        ("actions", "[]"),
        ("scores", "{}"),
        ("model_versions", "{}"),
        ("rules_fired", "[]"),
        ("reasons", "[]"),
        ("explanations", "{}"),
        ("shadow_scores", "{}"),
    )
}


@dataclass(frozen=True)
class ImportedEvent:
    """One valid row of history: the event as the ledger keeps it, and its labels (empty:
    the row carries no outcome)."""

    event_id: str
    event_type: str
    partition_key: str
    occurred_at: datetime
    payload: dict[str, Any]
    labels: Mapping[str, bool | str | float]
    row: int  # the row number in its source (1 = first data row)


@dataclass(frozen=True)
class WriteResult:
    """What ``ImportStore.write`` did with one batch."""

    inserted: frozenset[str]
    present: frozenset[str]  # in the ledger before this import: nothing written
    repeated: Mapping[str, tuple[str, int]]  # written earlier by this import: (source, row)
    outcomes_stored: int
    outcomes_present: int


def run_topic(run: str, source: str) -> str:
    """The ``source_topic`` of rows that import run ``run`` wrote from ``source``."""
    return f"{TOPIC_PREFIX}{run}/{source}"[:255]


class ImportStore:
    """Writes imported history through one engine; ``run`` names this import."""

    def __init__(self, engine: AsyncEngine, *, run: str, imported_at: datetime) -> None:
        if "/" in run or not run:
            raise ValueError(f"an import run name is a non-empty word without '/', got {run!r}")
        self._engine = engine
        self._run = run
        self._prefix = f"{TOPIC_PREFIX}{run}/"
        self._at = imported_at.astimezone(UTC)

    async def write(self, source: str, events: Sequence[ImportedEvent]) -> WriteResult:
        """Store ``events`` (distinct ids) and their labels in one transaction, skipping
        ids already in the ledger; an id this import wrote earlier is ``repeated``."""
        first: dict[str, ImportedEvent] = {}
        for e in events:
            first.setdefault(e.event_id, e)
        if not first:
            return WriteResult(frozenset(), frozenset(), {}, 0, 0)
        topic = run_topic(self._run, source)
        rows = [self._decision_row(first[i], topic) for i in sorted(first)]
        dialect = self._engine.dialect.name
        c = dec_table.c
        async with self._engine.begin() as conn:
            stmt = insert_or_skip(dec_table, dialect).values(**_CONSTANT_JSON).returning(c.event_id)
            inserted = set((await conn.execute(stmt, rows)).scalars().all())
            others = sorted(set(first) - inserted)
            present: set[str] = set()
            repeated: dict[str, tuple[str, int]] = {}
            stored_at: dict[str, datetime] = {}
            for part in chunks(others):
                found = await conn.execute(
                    sa.select(c.event_id, c.occurred_at, c.source_topic, c.source_offset).where(
                        c.event_id.in_(part)
                    )
                )
                for event_id, occurred_at, src, offset in found:
                    if str(src).startswith(self._prefix):
                        repeated[event_id] = (str(src)[len(self._prefix) :], int(offset))
                    else:
                        present.add(event_id)
                        stored_at[event_id] = occurred_at
            outcome_rows = [
                self._outcome_row(first[i], stored_at.get(i, first[i].occurred_at))
                for i in sorted(inserted | present)
                if first[i].labels
            ]
            outcomes_stored = 0
            if outcome_rows:
                out = insert_or_skip(out_table, dialect).returning(out_table.c.id)
                outcomes_stored = len((await conn.execute(out, outcome_rows)).scalars().all())
        return WriteResult(
            inserted=frozenset(inserted),
            present=frozenset(present),
            repeated=repeated,
            outcomes_stored=outcomes_stored,
            outcomes_present=len(outcome_rows) - outcomes_stored,
        )

    def _decision_row(self, e: ImportedEvent, topic: str) -> dict[str, Any]:
        occurred_at = e.occurred_at.astimezone(UTC)
        return {
            "event_id": e.event_id,
            "event_type": e.event_type,
            "partition_key": e.partition_key,
            "decision": IMPORTED_DECISION,
            "payload": e.payload,
            "latency_ms": 0.0,
            "occurred_at": occurred_at,
            "decided_at": occurred_at,
            "published_at": self._at,
            "source_topic": topic,
            "source_partition": 0,
            "source_offset": e.row,
            "ruleset_version": "",
            "origin": ORIGIN_IMPORTED,
        }

    def _outcome_row(self, e: ImportedEvent, observed_at: datetime) -> dict[str, Any]:
        observed_at = observed_at.astimezone(UTC)
        labels = dict(e.labels)
        return {
            "digest": content_digest(e.event_id, e.event_type, observed_at, labels, OUTCOME_SOURCE),
            "event_id": e.event_id,
            "event_type": e.event_type,
            "partition_key": e.partition_key,
            "labels": labels,
            "observed_at": observed_at,
            "received_at": self._at,
            "source": OUTCOME_SOURCE,
        }
