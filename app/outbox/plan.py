"""Which webhook deliveries a decision owes: the pure planner of the outbox.

A decision goes to every active endpoint whose ``on:`` filter takes it and to every
active endpoint a fired rule names (``webhook: <name>``), once per endpoint. The rows
are stored with the decision in one transaction (``Ledger.record(..., deliveries=...)``)
and sent later by the relay. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from app.outbox.config import Endpoints
from app.values import DeliveryRecord
from schemas import Decision

__all__ = ["plan_batch", "plan_deliveries"]


def targets(decision: Decision, endpoints: Endpoints) -> list[str]:
    """Names of the active endpoints that receive ``decision``, in a stable order: rule
    actions first (as the rules listed them), then subscriptions by name."""
    out: list[str] = []
    for action in decision.actions:
        name = action.get("name")
        if action.get("type") == "webhook" and name in endpoints.active and name not in out:
            out.append(str(name))
    for name in sorted(endpoints.active):
        if name not in out and endpoints.active[name].receives(
            decision.decision, decision.event_type
        ):
            out.append(name)
    return out


def plan_deliveries(
    decision: Decision, endpoints: Endpoints, created_at: datetime
) -> list[DeliveryRecord]:
    """The deliveries ``decision`` owes (none when no endpoint takes it)."""
    names = targets(decision, endpoints)
    if not names:
        return []
    payload = decision.model_dump(mode="json")
    return [
        DeliveryRecord(
            event_id=decision.event_id,
            endpoint=name,
            partition_key=decision.partition_key,
            payload=payload,
            created_at=created_at,
        )
        for name in names
    ]


def plan_batch(
    decisions: Iterable[Decision], endpoints: Endpoints | None, created_at: datetime
) -> list[DeliveryRecord]:
    """Every delivery a batch of decisions owes, in decision order."""
    if endpoints is None or not endpoints.active:
        return []
    return [d for decision in decisions for d in plan_deliveries(decision, endpoints, created_at)]
