"""The topic side of the outbox: decisions stored but never published get published.

A decision and its topic messages (``decisions.<type>`` and every ``publish:`` action's
topic) are one ledger row: stored first, published, then stamped ``published_at``. On
the Kafka path a crash between the two is healed by redelivery (offsets are committed
only after publishing, and a redelivered event re-publishes its stored decision). A
decision made over HTTP (``POST /v1/decide``) has no redelivery behind it, and a
publish can also fail after its decision was stored; this sweeper is the relay for
those: every few seconds it publishes the decisions still unstamped after a grace
period (longer than any batch takes, so it does not race the consume loop) and stamps
them. A message may therefore be published twice (at least once, like every Kafka
producer without transactions); it is never lost, and consumers dedupe by ``event_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import structlog

from app.core.records import decision_from_record
from app.store.ledger import Ledger
from app.store.tables import decisions
from app.values import OutMessage
from schemas import Decision

log = structlog.get_logger("arbiter.republish")

Publish = Callable[[Sequence[OutMessage]], Awaitable[None]]
MessagesOf = Callable[[Decision], list[OutMessage]]


async def unpublished(ledger: Ledger, *, older_than: datetime, limit: int) -> list[str]:
    """Event ids of decisions decided before ``older_than`` and never published."""
    query = (
        sa.select(decisions.c.event_id)
        .where(decisions.c.published_at.is_(None), decisions.c.decided_at < older_than)
        .order_by(decisions.c.decided_at)
        .limit(limit)
    )
    async with ledger.engine.connect() as conn:
        return list((await conn.execute(query)).scalars().all())


class PublishSweeper:
    def __init__(
        self,
        ledger: Ledger,
        messages_of: MessagesOf,
        publish: Publish,
        *,
        grace_s: float = 30.0,
        interval_s: float = 5.0,
        batch: int = 500,
    ) -> None:
        self._ledger = ledger
        self._messages_of = messages_of
        self._publish = publish
        self._grace = timedelta(seconds=grace_s)
        self._interval_s = interval_s
        self._batch = batch

    async def run_once(self, now: datetime | None = None) -> int:
        """Publish and stamp one batch of overdue decisions; how many."""
        now = now or datetime.now(UTC)
        ids = await unpublished(self._ledger, older_than=now - self._grace, limit=self._batch)
        if not ids:
            return 0
        found = await self._ledger.find_decisions(ids)
        pending = [s.record for s in found.values() if not s.published]
        messages = [m for r in pending for m in self._messages_of(decision_from_record(r))]
        await self._publish(messages)
        await self._ledger.mark_published([r.event_id for r in pending], [], datetime.now(UTC))
        log.info("stored decisions published late", decisions=len(pending))
        return len(pending)

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                while await self.run_once() == self._batch:
                    pass  # a backlog: keep going
            except Exception:  # broker or store down: try again at the next sweep
                log.exception("publishing overdue decisions failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
