"""The deliveries outbox: rows owed to webhook endpoints, and the lease that sends each
one from one relay at a time.

``insert_deliveries`` runs inside ``Ledger.record``'s transaction (decision and deliveries
commit together or not at all). ``OutboxStore`` is what the relay and ``arbiter
deliveries`` use: ``claim`` takes due rows under a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; on SQLite the conditional UPDATE is atomic because SQLite has one writer),
``settle`` writes attempt results, ``recent``/``retry`` serve the CLI.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.store.sql import chunks, insert_or_skip
from app.store.tables import deliveries as table
from app.values import DeliveryRecord

__all__ = [
    "Attempt",
    "Delivery",
    "OutboxStore",
    "delivery_rows",
    "insert_deliveries",
]

Status = Literal["pending", "delivered", "failed"]
# Keep error texts short: they are for the operator's table, not a log archive.
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Delivery:
    """One stored delivery."""

    id: int
    event_id: str
    endpoint: str
    idempotency_key: str
    partition_key: str
    payload: dict[str, Any]
    status: Status
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    claimed_by: str | None
    claimed_until: datetime | None


@dataclass(frozen=True)
class Attempt:
    """The result of one attempt at delivery ``id`` (``attempts`` counts this one)."""

    id: int
    status: Status
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


def delivery_rows(records: Sequence[DeliveryRecord]) -> list[dict[str, Any]]:
    """Insert rows, first per idempotency key, sorted by key (a fixed lock order)."""
    first: dict[str, DeliveryRecord] = {}
    for rec in records:
        first.setdefault(rec.idempotency_key, rec)
    return [
        {
            "event_id": rec.event_id,
            "endpoint": rec.endpoint,
            "idempotency_key": key,
            "partition_key": rec.partition_key,
            "payload": rec.payload,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": rec.created_at,
            "created_at": rec.created_at,
        }
        for key, rec in sorted(first.items())
    ]


async def insert_deliveries(conn: AsyncConnection, records: Sequence[DeliveryRecord]) -> int:
    """Insert ``records`` on ``conn`` (the caller's transaction), skipping keys already
    there; returns how many were inserted."""
    rows = delivery_rows(records)
    if not rows:
        return 0
    stmt = insert_or_skip(table, conn.dialect.name).returning(table.c.id)
    result = await conn.execute(stmt, rows)
    return len(result.scalars().all())


def _delivery(row: Mapping[Any, Any]) -> Delivery:
    return Delivery(**{name: row[name] for name in Delivery.__dataclass_fields__})


class OutboxStore:
    """Reads and writes ``deliveries`` through one ``AsyncEngine``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def claim(
        self,
        *,
        holder: str,
        now: datetime,
        lease: timedelta,
        limit: int,
        endpoints: Collection[str],
        ordered: Collection[str],
    ) -> list[Delivery]:
        """Lease up to ``limit`` due pending deliveries of ``endpoints`` to ``holder`` until
        ``now + lease``, oldest first. On an ``ordered`` endpoint a delivery is only due
        once no older pending delivery of the same partition key is left."""
        if not endpoints or limit <= 0:
            return []
        older = table.alias("older")
        blocked = (
            sa.select(older.c.id)
            .where(older.c.endpoint == table.c.endpoint)
            .where(older.c.partition_key == table.c.partition_key)
            .where(older.c.status == "pending")
            .where(older.c.id < table.c.id)
            .exists()
        )
        free = sa.or_(table.c.claimed_until.is_(None), table.c.claimed_until <= now)
        due = (
            sa.select(table.c.id)
            .where(table.c.status == "pending")
            .where(table.c.next_attempt_at <= now)
            .where(free)
            .where(table.c.endpoint.in_(sorted(endpoints)))
        )
        ordered_here = sorted(set(ordered) & set(endpoints))
        if ordered_here:
            due = due.where(sa.or_(table.c.endpoint.not_in(ordered_here), ~blocked))
        due = due.order_by(table.c.id).limit(limit)
        stmt = sa.update(table)
        if self._engine.dialect.name == "postgresql":
            # A CTE is evaluated once; PostgreSQL may re-run an ``IN (SELECT … LIMIT n)``
            # subquery and then claim more than n rows.
            picked = due.with_for_update(skip_locked=True).cte("picked")
            stmt = stmt.where(table.c.id == picked.c.id)
        else:
            stmt = stmt.where(table.c.id.in_(due.scalar_subquery()))
        stmt = (
            stmt.where(table.c.status == "pending")
            .where(free)
            .values(claimed_by=holder, claimed_until=now + lease)
            .returning(*table.c)
        )
        async with self._engine.begin() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return sorted((_delivery(r) for r in rows), key=lambda d: d.id)

    async def settle(self, holder: str, attempts: Sequence[Attempt]) -> None:
        """Write attempt results and release the lease, in one transaction. A success is
        written whoever holds the row now (it did arrive); other results only while
        ``holder`` still holds it (else a later claimer's result would be overwritten)."""
        if not attempts:
            return
        values: dict[str, Any] = {
            name: sa.bindparam(f"v_{name}")
            for name in (
                "status",
                "attempts",
                "next_attempt_at",
                "last_status",
                "last_error",
                "delivered_at",
            )
        }
        base = (
            sa.update(table)
            .where(table.c.id == sa.bindparam("v_id"))
            .values(**values, claimed_by=None, claimed_until=None)
        )
        done = base.where(table.c.status == "pending")
        other = base.where(table.c.claimed_by == holder)
        groups: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        for attempt in attempts:
            groups[attempt.status == "delivered"].append(
                {
                    "v_id": attempt.id,
                    "v_status": attempt.status,
                    "v_attempts": attempt.attempts,
                    "v_next_attempt_at": attempt.next_attempt_at,
                    "v_last_status": attempt.last_status,
                    "v_last_error": (attempt.last_error or "")[:MAX_ERROR_CHARS] or None,
                    "v_delivered_at": attempt.delivered_at,
                }
            )
        async with self._engine.begin() as conn:
            # One executemany per kind: a round's results cost one round trip each.
            if groups[True]:
                await conn.execute(done, groups[True])
            if groups[False]:
                await conn.execute(other, groups[False])

    async def release(self, holder: str, ids: Sequence[int]) -> None:
        """Give leased rows back unsent (a clean shutdown), so another relay need not wait."""
        async with self._engine.begin() as conn:
            for chunk in chunks(sorted(ids)):
                await conn.execute(
                    sa.update(table)
                    .where(table.c.id.in_(chunk))
                    .where(table.c.claimed_by == holder)
                    .values(claimed_by=None, claimed_until=None)
                )

    async def recent(
        self,
        *,
        status: Status | None = None,
        endpoint: str | None = None,
        event_id: str | None = None,
        limit: int = 50,
    ) -> list[Delivery]:
        """Deliveries, newest first, optionally only one status, endpoint or event."""
        query = sa.select(table)
        if status is not None:
            query = query.where(table.c.status == status)
        if endpoint is not None:
            query = query.where(table.c.endpoint == endpoint)
        if event_id is not None:
            query = query.where(table.c.event_id == event_id)
        query = query.order_by(table.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_delivery(r) for r in rows]

    async def retry(
        self, now: datetime, ids: Sequence[int] = (), *, all_failed: bool = False
    ) -> tuple[int, list[int]]:
        """Put deliveries back to pending, attempts reset, due ``now``: the ``ids`` given
        (whatever their status: a delivered one is sent again) and/or every failed one.
        Returns (how many, the ids that do not exist)."""
        values: dict[str, Any] = {
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "delivered_at": None,
            "claimed_by": None,
            "claimed_until": None,
        }
        wanted = sorted(set(ids))
        changed = 0
        missing: list[int] = []
        async with self._engine.begin() as conn:
            for chunk in chunks(wanted):
                found = set(
                    (await conn.execute(sa.select(table.c.id).where(table.c.id.in_(chunk))))
                    .scalars()
                    .all()
                )
                missing.extend(i for i in chunk if i not in found)
            if missing:
                return 0, missing
            for chunk in chunks(wanted):
                result = await conn.execute(
                    sa.update(table).where(table.c.id.in_(chunk)).values(**values)
                )
                changed += result.rowcount
            if all_failed:
                result = await conn.execute(
                    sa.update(table).where(table.c.status == "failed").values(**values)
                )
                changed += result.rowcount
        return changed, []

    async def counts(self) -> dict[tuple[str, str], int]:
        """Number of deliveries per (endpoint, status)."""
        query = sa.select(table.c.endpoint, table.c.status, sa.func.count()).group_by(
            table.c.endpoint, table.c.status
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {(e, s): int(n) for e, s, n in rows}
