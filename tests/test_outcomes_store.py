"""Outcomes in the store, on SQLite and PostgreSQL: every arrival is kept, counted by
case (with a decision, before its decision, repeated), and joined to its decision when
labels are read — the latest observed outcome wins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.ledger import Ledger
from app.store.outcomes import OutcomeCounts, OutcomeStore, outcome_digest
from app.values import DecisionRecord
from schemas import Outcome

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def decision(event_id: str, offset: int, **kw: object) -> DecisionRecord:
    fields: dict[str, object] = {
        "event_id": event_id,
        "event_type": "transaction",
        "partition_key": "acct-1",
        "decision": "approve",
        "actions": [],
        "scores": {"fraud": 0.2},
        "model_versions": {"transaction.fraud": "v1"},
        "rules_fired": [],
        "reasons": [],
        "payload": {"event_id": event_id, "amount": 10.0},
        "latency_ms": 1.0,
        "occurred_at": T0 + timedelta(minutes=offset),
        "decided_at": T0 + timedelta(minutes=offset),
        "source_topic": "events.transaction",
        "source_partition": 0,
        "source_offset": offset,
    }
    fields.update(kw)
    return DecisionRecord(**fields)  # type: ignore[arg-type]


def outcome(event_id: str, fraud: bool, days: int = 1, **kw: object) -> Outcome:
    return Outcome.model_validate(
        {
            "event_id": event_id,
            "event_type": "transaction",
            "partition_key": "acct-1",
            "occurred_at": (T0 + timedelta(days=days)).isoformat(),
            "labels": {"fraud": fraud},
            **kw,
        }
    )


async def test_each_arrival_is_kept_and_counted_by_case(
    ledger: Ledger, engine: AsyncEngine
) -> None:
    """With a decision → stored; for an event not decided (yet) → kept as before_decision;
    the same report again (also within one batch) → a duplicate, written once."""
    store = OutcomeStore(engine)
    await ledger.record([decision("t-1", 1)], [])
    counts = await store.record(
        [outcome("t-1", True), outcome("t-2", False), outcome("t-1", True)], T0
    )
    assert counts == OutcomeCounts(stored=1, before_decision=1, duplicates=1)
    again = await store.record([outcome("t-1", True)], T0)
    assert again == OutcomeCounts(duplicates=1)
    assert await store.pending() == 1


async def test_an_outcome_that_overtook_its_decision_joins_once_the_decision_exists(
    ledger: Ledger, engine: AsyncEngine
) -> None:
    store = OutcomeStore(engine)
    await store.record([outcome("t-9", True)], T0)
    assert await store.labelled("transaction") == []
    await ledger.record([decision("t-9", 9)], [])
    (joined,) = await store.labelled("transaction")
    assert (joined.event_id, joined.labels) == ("t-9", {"fraud": True})
    assert joined.payload["amount"] == 10.0
    assert joined.model_versions == {"transaction.fraud": "v1"}
    assert await store.pending() == 0


async def test_the_latest_observed_outcome_wins_and_labels_come_oldest_first(
    ledger: Ledger, engine: AsyncEngine
) -> None:
    """A later report overrides an earlier one for the same event; ``since`` filters by
    when the event happened; other event types are not mixed in."""
    store = OutcomeStore(engine)
    await ledger.record(
        [
            decision("t-1", 1),
            decision("t-2", 2),
            decision("o-1", 3, event_type="order", source_topic="events.order"),
        ],
        [],
    )
    await store.record(
        [
            outcome("t-2", False, days=1),
            outcome("t-2", True, days=5),  # a chargeback arrives later
            outcome("t-1", False, days=2),
            Outcome.model_validate(
                {
                    "event_id": "o-1",
                    "event_type": "order",
                    "partition_key": "cust-1",
                    "occurred_at": T0.isoformat(),
                    "labels": {"status": "returned"},
                }
            ),
        ],
        T0,
    )
    labelled = await store.labelled("transaction")
    assert [(x.event_id, x.labels["fraud"]) for x in labelled] == [("t-1", False), ("t-2", True)]
    later = await store.labelled("transaction", since=T0 + timedelta(minutes=2))
    assert [x.event_id for x in later] == ["t-2"]
    assert [x.event_id for x in await store.labelled("order")] == ["o-1"]


def test_the_digest_is_the_content_of_the_report() -> None:
    """Same report, same digest; another observation time or label, another digest."""
    assert outcome_digest(outcome("t-1", True)) == outcome_digest(outcome("t-1", True))
    assert outcome_digest(outcome("t-1", True)) != outcome_digest(outcome("t-1", False))
    assert outcome_digest(outcome("t-1", True)) != outcome_digest(outcome("t-1", True, days=2))
