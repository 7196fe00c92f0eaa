"""Outcomes in the store: ground truth kept as it arrives and joined to decisions.

An outcome names the event it is about by ``event_id``. It may arrive before that
event's decision is stored, more than once, or for an event Arbiter never saw; each is
kept (never dropped) and ``record`` says which case it was, for metrics. The join is
done when labels are read (``labelled``), so an outcome that overtook its decision
joins as soon as the decision exists. When several outcomes for one event disagree,
the one observed last wins (a chargeback after a "fulfilled").

The foundation of the trainer (issue 5): ``labelled`` is its dataset query.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.sql import IN_CHUNK, chunks, insert_or_skip
from app.store.tables import decisions as dec_table
from app.store.tables import outcomes as out_table
from schemas import Outcome


def outcome_digest(outcome: Outcome) -> str:
    """Identifies an outcome's content: the same report delivered twice has one digest."""
    return content_digest(
        outcome.event_id, outcome.event_type, outcome.occurred_at, outcome.labels, outcome.source
    )


def content_digest(
    event_id: str,
    event_type: str,
    occurred_at: datetime,
    labels: Mapping[str, Any],
    source: str | None,
) -> str:
    """``outcome_digest`` from the values themselves (imports write outcomes of declared
    types without building an ``Outcome``)."""
    canonical = json.dumps(
        [event_id, event_type, occurred_at.isoformat(), dict(labels), source],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class OutcomeCounts:
    """What ``record`` did with a batch of outcomes (each counted once)."""

    stored: int = 0  # new, and its decision is in the ledger
    before_decision: int = 0  # new, no decision stored (yet): kept, joins when it comes
    duplicates: int = 0  # seen before (same digest): nothing written


@dataclass(frozen=True)
class LabelledDecision:
    """A decision with the latest outcome observed for it: one training example."""

    event_id: str
    event_type: str
    occurred_at: datetime
    payload: dict[str, Any]
    scores: dict[str, Any]
    model_versions: dict[str, Any]
    labels: dict[str, Any]
    observed_at: datetime


class OutcomeStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(self, outcomes: Sequence[Outcome], received_at: datetime) -> OutcomeCounts:
        """Keep every new outcome; report how many were new with and without a decision,
        and how many were repeats."""
        rows: dict[str, dict[str, Any]] = {}
        for o in outcomes:
            rows.setdefault(
                outcome_digest(o),
                {
                    "event_id": o.event_id,
                    "event_type": o.event_type,
                    "partition_key": o.partition_key,
                    "labels": dict(o.labels),
                    "observed_at": o.occurred_at,
                    "received_at": received_at,
                    "source": o.source,
                },
            )
        if not rows:
            return OutcomeCounts()
        insert = insert_or_skip(out_table, self._engine.dialect.name).returning(
            out_table.c.event_id
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(
                insert, [{"digest": d, **row} for d, row in sorted(rows.items())]
            )
            new_ids = list(result.scalars().all())
            known: set[str] = set()
            for part in chunks(sorted(set(new_ids)), IN_CHUNK):
                found = await conn.execute(
                    sa.select(dec_table.c.event_id).where(dec_table.c.event_id.in_(part))
                )
                known.update(found.scalars().all())
        with_decision = sum(1 for e in new_ids if e in known)
        return OutcomeCounts(
            stored=with_decision,
            before_decision=len(new_ids) - with_decision,
            duplicates=len(outcomes) - len(new_ids),
        )

    async def labelled(
        self, event_type: str, *, since: datetime | None = None
    ) -> list[LabelledDecision]:
        """Decisions of ``event_type`` (occurred at or after ``since``) that have an outcome,
        each with its latest observed outcome, oldest decision first."""
        o, d = out_table.c, dec_table.c
        latest = (
            sa.select(
                o.event_id,
                o.labels,
                o.observed_at,
                sa.func.row_number()
                .over(partition_by=o.event_id, order_by=(o.observed_at.desc(), o.id.desc()))
                .label("rank"),
            )
            .where(o.event_type == event_type)
            .subquery()
        )
        query = (
            sa.select(
                d.event_id,
                d.event_type,
                d.occurred_at,
                d.payload,
                d.scores,
                d.model_versions,
                latest.c.labels,
                latest.c.observed_at,
            )
            .join(latest, sa.and_(latest.c.event_id == d.event_id, latest.c.rank == 1))
            .where(d.event_type == event_type)
            .order_by(d.occurred_at, d.id)
        )
        if since is not None:
            query = query.where(d.occurred_at >= since)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            LabelledDecision(
                event_id=r.event_id,
                event_type=r.event_type,
                occurred_at=r.occurred_at,
                payload=r.payload,
                scores=r.scores,
                model_versions=r.model_versions,
                labels=r.labels,
                observed_at=r.observed_at,
            )
            for r in rows
        ]

    async def pending(self) -> int:
        """Outcomes whose decision is not (yet) in the ledger: early or unknown events."""
        o, d = out_table.c, dec_table.c
        query = (
            sa.select(sa.func.count())
            .select_from(out_table)
            .where(~sa.exists(sa.select(d.id).where(d.event_id == o.event_id)))
        )
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())
