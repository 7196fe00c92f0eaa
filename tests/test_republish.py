"""Decisions stored but never published (an HTTP decide whose publish failed, a crash
between store and publish) are published by the sweeper once overdue — and only those,
once each — on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from app.pipeline.republish import PublishSweeper
from app.simulator.generate import labelled_events
from app.store.ledger import Ledger
from app.values import OutMessage
from schemas import Decision
from tests.trainer_data import decision_rows


def _messages(decision: Decision) -> list[OutMessage]:
    return [OutMessage(f"decisions.{decision.event_type}", b"k", decision.event_id.encode())]


async def test_overdue_unpublished_decisions_are_published_once_and_stamped(
    ledger: Ledger,
) -> None:
    """Of four stored decisions — two overdue and unpublished, one already published,
    one too recent (its batch may still be publishing) — exactly the two overdue ones
    are published, then stamped, so the next sweep publishes nothing."""
    events, _ = labelled_events("transaction", 4, seed=501)
    rows = decision_rows(events, model="transaction.fraud")
    now = datetime.now(UTC)
    recent = dataclasses.replace(rows[3], decided_at=now - timedelta(seconds=2))
    await ledger.record([*rows[:3], recent], [])
    await ledger.mark_published([rows[2].event_id], [], now)
    sent: list[OutMessage] = []

    async def publish(messages: Sequence[OutMessage]) -> None:
        sent.extend(messages)

    sweeper = PublishSweeper(ledger, _messages, publish, grace_s=30)
    assert await sweeper.run_once(now) == 2
    assert sorted(m.value.decode() for m in sent) == sorted(r.event_id for r in rows[:2])
    stored = await ledger.find_decisions([r.event_id for r in rows])
    assert stored[rows[0].event_id].published
    assert stored[rows[1].event_id].published
    assert not stored[recent.event_id].published
    assert await sweeper.run_once(now) == 0
    assert len(sent) == 2


async def test_a_failed_publish_leaves_the_decisions_unstamped_for_the_next_sweep(
    ledger: Ledger,
) -> None:
    """The broker is down: nothing is stamped; the next sweep publishes them."""
    events, _ = labelled_events("transaction", 3, seed=502)
    await ledger.record(decision_rows(events, model="transaction.fraud"), [])
    calls = 0

    async def flaky(messages: Sequence[OutMessage]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("broker down")

    sweeper = PublishSweeper(ledger, _messages, flaky)
    with pytest.raises(ConnectionError):
        await sweeper.run_once()
    stored = await ledger.find_decisions([e.event_id for e in events])
    assert not any(s.published for s in stored.values())
    assert await sweeper.run_once() == 3
