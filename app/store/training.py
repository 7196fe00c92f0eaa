"""The trainer's tables: the experiment history (``training_runs``) and leases.

Every training run leaves one row, opened as ``running`` before any work and closed with
what happened: ``promoted`` (the challenger now serves), ``kept`` (registered as a
challenger, not better), ``skipped`` (not enough data), ``failed`` (an error, nothing
registered) or ``abandoned`` (its process died; found and closed by the next trainer).

A lease is a row naming who may do a job until when. It is taken with one conditional
write (free, expired, or already ours), so of two trainers racing for it exactly one
wins, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.tables import ORIGIN_DECIDED, decisions, leases, outcomes, training_runs

FINAL_STATUSES = ("promoted", "kept", "skipped", "failed", "abandoned")


@dataclass(frozen=True)
class TrainingRun:
    id: int
    model: str
    trigger: str
    status: str
    holder: str
    started_at: datetime
    finished_at: datetime | None
    outcomes_seen: int
    summary: dict[str, Any]
    champion_version: int | None
    challenger_version: int | None
    champion_metrics: dict[str, float]
    challenger_metrics: dict[str, float]
    reason: str
    report: str


def _run(row: Any) -> TrainingRun:
    return TrainingRun(
        id=row.id,
        model=row.model,
        trigger=row.trigger,
        status=row.status,
        holder=row.holder,
        started_at=row.started_at,
        finished_at=row.finished_at,
        outcomes_seen=int(row.outcomes_seen),
        summary=dict(row.summary or {}),
        champion_version=row.champion_version,
        challenger_version=row.challenger_version,
        champion_metrics=dict(row.champion_metrics or {}),
        challenger_metrics=dict(row.challenger_metrics or {}),
        reason=row.reason,
        report=row.report,
    )


class TrainingStore:
    """Training runs, the outcome counts that trigger them, and leases."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # --- runs ------------------------------------------------------------------------

    async def open_run(self, model: str, trigger: str, holder: str, outcomes_seen: int) -> int:
        """Record that a run started (before any work), returning its id."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.insert(training_runs)
                .values(
                    model=model,
                    trigger=trigger,
                    status="running",
                    holder=holder,
                    started_at=datetime.now(UTC),
                    outcomes_seen=outcomes_seen,
                    summary={},
                    champion_metrics={},
                    challenger_metrics={},
                )
                .returning(training_runs.c.id)
            )
            return int(result.scalar_one())

    async def close_run(
        self,
        run_id: int,
        status: str,
        *,
        reason: str,
        summary: Mapping[str, Any] | None = None,
        champion_version: int | None = None,
        challenger_version: int | None = None,
        champion_metrics: Mapping[str, float] | None = None,
        challenger_metrics: Mapping[str, float] | None = None,
        report: str = "",
    ) -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(FINAL_STATUSES)}")
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(training_runs)
                .where(training_runs.c.id == run_id)
                .values(
                    status=status,
                    finished_at=datetime.now(UTC),
                    reason=reason[:4000],
                    summary=dict(summary or {}),
                    champion_version=champion_version,
                    challenger_version=challenger_version,
                    champion_metrics=dict(champion_metrics or {}),
                    challenger_metrics=dict(challenger_metrics or {}),
                    report=report,
                )
            )

    async def abandon_stale(self, model: str) -> int:
        """Close the ``running`` rows of ``model`` left by a process that died (called by
        the lease holder: no other run of the model can be in progress)."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(training_runs)
                .where(training_runs.c.model == model, training_runs.c.status == "running")
                .values(
                    status="abandoned",
                    finished_at=datetime.now(UTC),
                    reason="the training process stopped before finishing; nothing was registered",
                )
            )
            return int(result.rowcount or 0)

    async def runs(self, model: str | None = None, *, limit: int = 20) -> list[TrainingRun]:
        query = sa.select(training_runs).order_by(training_runs.c.id.desc()).limit(limit)
        if model is not None:
            query = query.where(training_runs.c.model == model)
        async with self._engine.connect() as conn:
            return [_run(r) for r in (await conn.execute(query)).all()]

    async def get(self, run_id: int) -> TrainingRun | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(training_runs).where(training_runs.c.id == run_id))
            ).first()
        return _run(row) if row is not None else None

    async def last_run(self, model: str, *, finished: bool = True) -> TrainingRun | None:
        """The newest run of ``model`` (``finished``: that ended, whatever the result — new
        outcomes are counted from it, so a skipped or failed run waits for more data
        instead of retrying at every poll)."""
        query = (
            sa.select(training_runs)
            .where(training_runs.c.model == model)
            .order_by(training_runs.c.id.desc())
            .limit(1)
        )
        if finished:
            query = query.where(training_runs.c.status != "running")
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _run(row) if row is not None else None

    # --- outcome counts --------------------------------------------------------------

    async def outcome_watermark(self) -> int:
        """The highest outcome id stored so far (0: none)."""
        async with self._engine.connect() as conn:
            value = (await conn.execute(sa.select(sa.func.max(outcomes.c.id)))).scalar()
        return int(value or 0)

    async def labelled_since(self, event_type: str, after_outcome_id: int) -> int:
        """Outcomes of ``event_type`` stored after ``after_outcome_id`` whose decision is
        in the ledger (labelled examples a new training would gain)."""
        o, d = outcomes.c, decisions.c
        query = (
            sa.select(sa.func.count(sa.distinct(o.event_id)))
            .select_from(outcomes)
            .where(
                o.event_type == event_type,
                o.id > after_outcome_id,
                sa.exists(sa.select(d.id).where(d.event_id == o.event_id)),
            )
        )
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    # --- leases ----------------------------------------------------------------------

    async def acquire(self, name: str, holder: str, ttl: timedelta) -> bool:
        """Take or renew the lease ``name`` for ``ttl``; False if another holder has it."""
        now = datetime.now(UTC)
        until = now + ttl
        async with self._engine.begin() as conn:
            taken = await conn.execute(
                sa.update(leases)
                .where(
                    leases.c.name == name,
                    sa.or_(leases.c.holder == holder, leases.c.expires_at < now),
                )
                .values(holder=holder, expires_at=until)
            )
            if taken.rowcount:
                return True
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    sa.insert(leases).values(name=name, holder=holder, expires_at=until)
                )
        except IntegrityError:
            return False  # someone else holds it (and it has not expired)
        return True

    async def release(self, name: str, holder: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            )

    async def holder(self, name: str) -> tuple[str, datetime] | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(leases).where(leases.c.name == name))).first()
        return (row.holder, row.expires_at) if row is not None else None


@dataclass(frozen=True)
class RecentDecision:
    event_id: str
    occurred_at: datetime
    payload: dict[str, Any]
    scores: dict[str, Any]
    model_versions: dict[str, Any]  # model name -> "vN" that scored it
    labels: dict[str, Any] | None  # the latest outcome's labels, if one arrived


async def recent_decisions(
    engine: AsyncEngine, event_type: str, limit: int
) -> list[RecentDecision]:
    """The newest ``limit`` decisions of ``event_type``, oldest first, each with its
    latest outcome's labels (the drift monitor's recent window)."""
    d, o = decisions.c, outcomes.c
    newest = (
        sa.select(d.id, d.event_id, d.occurred_at, d.payload, d.scores, d.model_versions)
        .where(d.event_type == event_type)
        .where(d.origin == ORIGIN_DECIDED)  # imported history was scored by no champion
        .order_by(d.occurred_at.desc(), d.id.desc())
        .limit(limit)
        .subquery()
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(newest))).all()
        ids = [r.event_id for r in rows]
        labels: dict[str, tuple[datetime, int, dict[str, Any]]] = {}
        for start in range(0, len(ids), 500):
            found = await conn.execute(
                sa.select(o.event_id, o.observed_at, o.id, o.labels).where(
                    o.event_id.in_(ids[start : start + 500])
                )
            )
            for r in found:
                seen = labels.get(r.event_id)
                if seen is None or (r.observed_at, r.id) > seen[:2]:
                    labels[r.event_id] = (r.observed_at, r.id, dict(r.labels))
    out = [
        RecentDecision(
            r.event_id,
            r.occurred_at,
            dict(r.payload),
            dict(r.scores or {}),
            dict(r.model_versions or {}),
            labels[r.event_id][2] if r.event_id in labels else None,
        )
        for r in rows
    ]
    out.reverse()
    return out
