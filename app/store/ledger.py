"""The decision ledger: exactly one stored decision per ``event_id``.

Delivery into Arbiter is at-least-once. The consumer asks the ledger which events of a
batch are already decided (``find_decisions``), decides the rest, and writes the whole
batch with ``record``: one transaction, one multi-row insert per table, with
ON CONFLICT DO NOTHING on the unique keys. A redelivered event, or the same event
decided concurrently by another consumer, therefore never gets a second row; the loser
learns which ids were taken and loads the winner's decision instead. After publishing,
``mark_published`` stamps the rows so a later redelivery knows nothing is owed.

Row building and record reconstruction are plain functions; the ``Ledger`` class is the
thin I/O shell around them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.errors import TransientError
from app.store.db import describe_cause
from app.store.outbox import insert_deliveries
from app.store.sql import chunks, insert_or_skip, is_transient
from app.store.tables import ORIGIN_DECIDED
from app.store.tables import dead_letters as dl_table
from app.store.tables import decisions as dec_table
from app.values import (
    DeadLetterRecord,
    DecidedEvent,
    DecisionRecord,
    DeliveryRecord,
    RecordOutcome,
    StoredDecision,
)

# --- pure helpers -------------------------------------------------------------------


def decision_rows(records: Sequence[DecisionRecord]) -> list[dict[str, Any]]:
    """Insert rows for ``records``: first occurrence per event_id, sorted by event_id.

    Sorting matters on PostgreSQL: two transactions inserting overlapping keys in the
    same order queue behind each other instead of deadlocking.
    """
    first: dict[str, DecisionRecord] = {}
    for rec in records:
        first.setdefault(rec.event_id, rec)
    return [_decision_row(first[event_id]) for event_id in sorted(first)]


def _require_aware(value: datetime, field: str, where: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{field} of {where} is a naive datetime ({value.isoformat()}): "
            "build it timezone-aware, e.g. datetime.now(UTC)"
        )
    return value


def _decision_row(rec: DecisionRecord) -> dict[str, Any]:
    where = f"decision {rec.event_id}"
    return {
        "event_id": rec.event_id,
        "event_type": rec.event_type,
        "partition_key": rec.partition_key,
        "decision": rec.decision,
        "actions": rec.actions,
        "scores": rec.scores,
        "model_versions": rec.model_versions,
        "rules_fired": rec.rules_fired,
        "reasons": rec.reasons,
        "payload": rec.payload,
        "latency_ms": rec.latency_ms,
        "occurred_at": _require_aware(rec.occurred_at, "occurred_at", where),
        "decided_at": _require_aware(rec.decided_at, "decided_at", where),
        "source_topic": rec.source_topic,
        "source_partition": rec.source_partition,
        "source_offset": rec.source_offset,
        "ruleset_version": rec.ruleset_version,
        "explanations": rec.explanations,
        "shadow_scores": rec.shadow_scores,
    }


def dead_letter_rows(records: Sequence[DeadLetterRecord]) -> list[dict[str, Any]]:
    """Insert rows for ``records``: first occurrence per position, sorted by position."""
    first: dict[tuple[str, int, int], DeadLetterRecord] = {}
    for rec in records:
        first.setdefault((rec.source_topic, rec.source_partition, rec.source_offset), rec)
    return [_dead_letter_row(first[pos]) for pos in sorted(first)]


def _dead_letter_row(rec: DeadLetterRecord) -> dict[str, Any]:
    return {
        "event_type": rec.event_type,
        "source_topic": rec.source_topic,
        "source_partition": rec.source_partition,
        "source_offset": rec.source_offset,
        "event_id": rec.event_id,
        "reason": rec.reason,
        "detail": rec.detail,
        "raw": rec.raw,
        "key": rec.key,
        "created_at": _require_aware(
            rec.created_at,
            "created_at",
            f"dead letter {rec.source_topic}/{rec.source_partition}@{rec.source_offset}",
        ),
    }


def decision_from_row(row: Mapping[Any, Any]) -> DecisionRecord:
    """Rebuild a ``DecisionRecord`` from a ``decisions`` row mapping."""
    return DecisionRecord(
        event_id=row["event_id"],
        event_type=row["event_type"],
        partition_key=row["partition_key"],
        decision=row["decision"],
        actions=row["actions"],
        scores=row["scores"],
        model_versions=row["model_versions"],
        rules_fired=row["rules_fired"],
        reasons=row["reasons"],
        payload=row["payload"],
        latency_ms=row["latency_ms"],
        occurred_at=row["occurred_at"],
        decided_at=row["decided_at"],
        source_topic=row["source_topic"],
        source_partition=row["source_partition"],
        source_offset=row["source_offset"],
        ruleset_version=row["ruleset_version"],
        explanations=row["explanations"] or {},
        shadow_scores=row["shadow_scores"] or {},
    )


def dead_letter_from_row(row: Mapping[Any, Any]) -> DeadLetterRecord:
    """Rebuild a ``DeadLetterRecord`` from a ``dead_letters`` row mapping."""
    return DeadLetterRecord(
        event_type=row["event_type"],
        source_topic=row["source_topic"],
        source_partition=row["source_partition"],
        source_offset=row["source_offset"],
        event_id=row["event_id"],
        reason=row["reason"],
        detail=row["detail"],
        raw=bytes(row["raw"]),
        key=bytes(row["key"]) if row["key"] is not None else None,
        created_at=row["created_at"],
    )


def percentiles(values: Iterable[float], qs: Sequence[float]) -> dict[float, float]:
    """Linear-interpolated percentiles of ``values`` (as PostgreSQL's ``percentile_cont``).

    Empty input gives an empty dict: there is no honest number to report.
    """
    values = sorted(values)
    if not values:
        return {}
    last = len(values) - 1
    out: dict[float, float] = {}
    for q in qs:
        pos = q * last
        low = math.floor(pos)
        high = min(low + 1, last)
        out[q] = values[low] + (values[high] - values[low]) * (pos - low)
    return out


def _offsets_by_partition(
    positions: Iterable[tuple[str, int, int]],
) -> dict[tuple[str, int], list[int]]:
    """Positions grouped per (topic, partition), offsets sorted: one IN list per partition,
    which is portable (no row-value IN) and matches how a batch is laid out."""
    grouped: dict[tuple[str, int], list[int]] = defaultdict(list)
    for topic, partition, offset in sorted(set(positions)):
        grouped[(topic, partition)].append(offset)
    return dict(grouped)


# --- I/O shell ----------------------------------------------------------------------

# Rows Arbiter decided (not history brought in by `arbiter import`).
_DECIDED = dec_table.c.origin == ORIGIN_DECIDED


class Ledger:
    """Reads and writes decisions and dead letters through one ``AsyncEngine``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @asynccontextmanager
    async def _transaction(self, doing: str) -> AsyncIterator[AsyncConnection]:
        """A transaction whose connection-level failures surface as ``TransientError``."""
        try:
            async with self._engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            raise self._transient(doing, exc) from exc
        except (OSError, TimeoutError) as exc:
            raise self._transient(doing, exc) from exc

    def _transient(self, doing: str, exc: BaseException) -> TransientError:
        url = self._engine.url
        return TransientError(
            f"could not {doing} in the database at {url.render_as_string(hide_password=True)}"
            f": {describe_cause(exc, url)}. Check that the database is up and reachable and "
            "that no other process holds a long write lock; the batch will be retried."
        )

    async def find_decisions(self, event_ids: Sequence[str]) -> dict[str, StoredDecision]:
        """Decisions already stored for any of ``event_ids``, keyed by event_id."""
        wanted = sorted(set(event_ids))
        found: dict[str, StoredDecision] = {}
        if not wanted:
            return found
        async with self._transaction("look up decisions") as conn:
            for chunk in chunks(wanted):
                result = await conn.execute(
                    sa.select(dec_table).where(dec_table.c.event_id.in_(chunk))
                )
                for row in result.mappings():
                    found[row["event_id"]] = StoredDecision(
                        record=decision_from_row(row),
                        published=row["published_at"] is not None,
                    )
        return found

    async def find_dead_letters(
        self, positions: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], bool]:
        """Which of ``positions`` already hold a dead letter, mapped to "published yet".

        A redelivered bad record is then re-published only if its first publication
        never happened, and not counted twice.
        """
        found: dict[tuple[str, int, int], bool] = {}
        by_partition = _offsets_by_partition(positions)
        if not by_partition:
            return found
        columns = (
            dl_table.c.source_topic,
            dl_table.c.source_partition,
            dl_table.c.source_offset,
            dl_table.c.published_at,
        )
        async with self._transaction("look up dead letters") as conn:
            for (topic, partition), offsets in by_partition.items():
                for chunk in chunks(offsets):
                    result = await conn.execute(
                        sa.select(*columns)
                        .where(dl_table.c.source_topic == topic)
                        .where(dl_table.c.source_partition == partition)
                        .where(dl_table.c.source_offset.in_(chunk))
                    )
                    for t, p, o, published_at in result:
                        found[(t, p, o)] = published_at is not None
        return found

    async def record(
        self,
        decisions: Sequence[DecisionRecord],
        dead_letters: Sequence[DeadLetterRecord],
        deliveries: Sequence[DeliveryRecord] = (),
    ) -> RecordOutcome:
        """Store a batch's decisions and dead letters in one transaction, skipping keys
        that already exist. ``deliveries`` (the webhook outbox) are written in the same
        transaction, only those of decisions this call really inserted: a redelivered
        event never owes a second delivery."""

        d_rows = decision_rows(decisions)
        dl_rows = dead_letter_rows(dead_letters)
        inserted: set[str] = set()
        dead_inserted = 0
        if not d_rows and not dl_rows:
            return RecordOutcome(frozenset(), frozenset(), 0)
        dialect = self._engine.dialect.name
        async with self._transaction("store the batch") as conn:
            # Decisions before dead letters, always: a fixed lock order across tables.
            if d_rows:
                # executemany + RETURNING is sent as multi-row INSERT ... VALUES pages
                # ("insertmanyvalues"); RETURNING yields only the rows really inserted.
                stmt = insert_or_skip(dec_table, dialect).returning(dec_table.c.event_id)
                result = await conn.execute(stmt, d_rows)
                inserted.update(result.scalars().all())
                owed = [d for d in deliveries if d.event_id in inserted]
                if owed:
                    await insert_deliveries(conn, owed)
            if dl_rows:
                stmt = insert_or_skip(dl_table, dialect).returning(dl_table.c.id)
                result = await conn.execute(stmt, dl_rows)
                dead_inserted = len(result.scalars().all())
        requested = frozenset(row["event_id"] for row in d_rows)
        return RecordOutcome(
            inserted_event_ids=frozenset(inserted),
            duplicate_event_ids=requested - inserted,
            dead_letters_inserted=dead_inserted,
        )

    async def mark_published(
        self,
        event_ids: Sequence[str],
        dead_letter_positions: Sequence[tuple[str, int, int]],
        at: datetime,
    ) -> None:
        """Stamp decisions and dead letters as published at ``at`` (first time wins)."""
        ids = sorted(set(event_ids))
        by_partition = _offsets_by_partition(dead_letter_positions)
        if not ids and not by_partition:
            return
        async with self._transaction("mark the batch published") as conn:
            for chunk in chunks(ids):
                await conn.execute(
                    sa.update(dec_table)
                    .where(dec_table.c.event_id.in_(chunk))
                    .where(dec_table.c.published_at.is_(None))
                    .values(published_at=at)
                )
            for (topic, partition), offsets in by_partition.items():
                for chunk_ in chunks(offsets):
                    await conn.execute(
                        sa.update(dl_table)
                        .where(dl_table.c.source_topic == topic)
                        .where(dl_table.c.source_partition == partition)
                        .where(dl_table.c.source_offset.in_(chunk_))
                        .where(dl_table.c.published_at.is_(None))
                        .values(published_at=at)
                    )

    # --- summaries (demo, tests, dashboard) -----------------------------------------

    async def decision_counts(self) -> dict[tuple[str, str], int]:
        """Number of decisions per (event_type, decision); imported history is not counted
        (it was never decided here)."""
        return await self._grouped_count(
            dec_table, dec_table.c.event_type, dec_table.c.decision, _DECIDED
        )

    async def dead_letter_counts(self) -> dict[tuple[str, str], int]:
        """Number of dead letters per (event_type, reason)."""
        return await self._grouped_count(dl_table, dl_table.c.event_type, dl_table.c.reason)

    async def _grouped_count(
        self,
        table: sa.Table,
        first: sa.Column[Any],
        second: sa.Column[Any],
        where: sa.ColumnElement[bool] | None = None,
    ) -> dict[tuple[str, str], int]:
        query = sa.select(first, second, sa.func.count()).select_from(table).group_by(first, second)
        if where is not None:
            query = query.where(where)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {(a, b): int(n) for a, b, n in rows}

    async def latest_occurred_at(self) -> datetime | None:
        """The event time of the newest stored event, imported history included (the
        replay watermark)."""
        async with self._engine.connect() as conn:
            # max() keeps the column's type, so SQLite's value comes back aware UTC too.
            value: datetime | None = await conn.scalar(
                sa.select(sa.func.max(dec_table.c.occurred_at))
            )
        return value

    async def decided_events(
        self, since: datetime, *, page: int = 5_000
    ) -> AsyncIterator[list[DecidedEvent]]:
        """Every decided event with ``occurred_at >= since``, oldest first, in pages.

        Keyset pagination on (occurred_at, id): constant memory however long the window,
        and no row is returned twice. Used to rebuild correlation windows and to
        backtest rules; it only reads. Imported history is included (its decision reads
        ``imported``): it is what happened, and backtests are run on it.
        """
        cols = (
            dec_table.c.id,
            dec_table.c.event_type,
            dec_table.c.partition_key,
            dec_table.c.occurred_at,
            dec_table.c.payload,
            dec_table.c.scores,
            dec_table.c.decision,
            dec_table.c.rules_fired,
            dec_table.c.ruleset_version,
        )
        after: tuple[datetime, int] | None = None
        while True:
            query = sa.select(*cols).where(dec_table.c.occurred_at >= since)
            if after is not None:
                query = query.where(
                    sa.or_(
                        dec_table.c.occurred_at > after[0],
                        sa.and_(dec_table.c.occurred_at == after[0], dec_table.c.id > after[1]),
                    )
                )
            query = query.order_by(dec_table.c.occurred_at, dec_table.c.id).limit(page)
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            if not rows:
                return
            yield [
                DecidedEvent(
                    event_type=r.event_type,
                    partition_key=r.partition_key,
                    occurred_at=r.occurred_at,
                    payload=r.payload,
                    scores=r.scores,
                    decision=r.decision,
                    rules_fired=tuple(r.rules_fired),
                    ruleset_version=r.ruleset_version,
                )
                for r in rows
            ]
            after = (rows[-1].occurred_at, rows[-1].id)

    async def latency_percentiles(self, qs: Sequence[float] = (0.5, 0.99)) -> dict[float, float]:
        """Percentiles of ``latency_ms`` over all decisions made here (imported history has
        no latency); empty when there are none."""
        bad = [q for q in qs if not 0.0 <= q <= 1.0]
        if bad:
            raise ValueError(f"percentiles must be between 0 and 1, got {bad}")
        if not qs:
            return {}
        async with self._engine.connect() as conn:
            if self._engine.dialect.name == "postgresql":
                # Let the server do it: no need to ship the whole column over the wire.
                query = sa.select(
                    *(sa.func.percentile_cont(q).within_group(dec_table.c.latency_ms) for q in qs)
                ).where(_DECIDED)
                row = (await conn.execute(query)).one()
                if row[0] is None:
                    return {}
                return {q: float(v) for q, v in zip(qs, row, strict=True)}
            result = await conn.execute(
                sa.select(dec_table.c.latency_ms).where(_DECIDED).order_by(dec_table.c.latency_ms)
            )
            values = [float(v) for v in result.scalars()]
        return percentiles(values, qs)

    async def count_decisions(self) -> int:
        """Number of stored decisions made here (imported history not counted)."""
        return await self._count(dec_table, _DECIDED)

    async def count_imported(self) -> int:
        """Number of events imported as history (``arbiter import``)."""
        return await self._count(dec_table, ~_DECIDED)

    async def count_dead_letters(self) -> int:
        """Number of stored dead letters."""
        return await self._count(dl_table)

    async def _count(self, table: sa.Table, where: sa.ColumnElement[bool] | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(table)
        if where is not None:
            query = query.where(where)
        async with self._engine.connect() as conn:
            n = await conn.scalar(query)
        return int(n or 0)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetterRecord]:
        """The most recent dead letters, newest first."""
        query = sa.select(dl_table).order_by(dl_table.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            result = await conn.execute(query)
            return [dead_letter_from_row(row) for row in result.mappings()]
