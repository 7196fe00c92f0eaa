"""Correlation windows inside the running pipeline (real broker, real SQLite): counted in
record order across event types, read by the rules, and rebuilt from the ledger when a
new process starts."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from app.simulator.generate import SimEvent
from app.store import migrate
from app.wiring import consume_loop, start_components
from connectors.broker import EmbeddedBroker
from tests.harness import produce, read_topics

pytestmark = [pytest.mark.kafka, pytest.mark.sqlite]

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

TRANSACTION_RULES = """
ruleset: transaction
default: {decision: approve, reason: Nothing matched.}
windows:
  - name: countries_over_500_10m
    within: 10m
    where: {field: amount, gt: 500}
    distinct: country
  - name: password_resets_1h
    from: ticket
    within: 1h
    where: {field: subject, matches: "(?i)password"}
    count: true
rules:
  - name: review_many_countries
    priority: 10
    when: {field: windows.countries_over_500_10m, gte: 3}
    decision: review
    reason: "{windows.countries_over_500_10m:.0f} countries in 10 minutes."
  - name: hold_transfer_after_password_reset
    when:
      all:
        - {field: windows.password_resets_1h, gte: 1}
        - {field: amount, gt: 2000}
    decision: hold
    reason: Large transfer within an hour of a password reset.
"""


def _rules(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "transaction.yaml").write_text(TRANSACTION_RULES)
    for event_type, default in (("order", "accept"), ("ticket", "route_general")):
        (folder / f"{event_type}.yaml").write_text(
            f"ruleset: {event_type}\ndefault: {{decision: {default}, reason: Default.}}\n"
            "rules: []\n"
        )
    return folder


def _tx(event_id: str, account: str, at: datetime, amount: float, country: str) -> SimEvent:
    body: dict[str, Any] = {
        "event_id": event_id,
        "occurred_at": at.isoformat(),
        "account_id": account,
        "amount": amount,
        "currency": "EUR",
        "merchant": "Shop",
        "merchant_category": "electronics",
        "channel": "card_present",
        "country": country,
        "card_country": "DE",
        "device": {"device_id": "d1", "kind": "pos", "is_new": False},
    }
    return SimEvent("transaction", account.encode(), json.dumps(body).encode(), event_id, None, {})


def _ticket(event_id: str, customer: str, at: datetime, subject: str) -> SimEvent:
    body = {
        "event_id": event_id,
        "occurred_at": at.isoformat(),
        "customer_id": customer,
        "channel": "email",
        "subject": subject,
        "body": "Please help.",
        "customer_tier": "standard",
    }
    return SimEvent("ticket", customer.encode(), json.dumps(body).encode(), event_id, None, {})


async def _run_until_decided(settings: Settings, bootstrap: str, events: list[SimEvent]) -> None:
    """One 'process': start components, feed ``events``, wait for them, stop."""
    async with start_components(settings) as components:
        loop = consume_loop(components)
        task = asyncio.create_task(loop.run())
        await asyncio.wait_for(loop.ready.wait(), 30)
        decided_before = await components.ledger.count_decisions()
        await produce(bootstrap, events)
        for _ in range(300):
            if await components.ledger.count_decisions() >= decided_before + len(events):
                break
            await asyncio.sleep(0.1)
        loop.stop()
        await task


async def _decisions(bootstrap: str, total: int) -> dict[str, dict[str, Any]]:
    got = await read_topics(
        bootstrap, ["decisions.transaction", "decisions.ticket"], until=total, settle=0.5
    )
    return {
        d["event_id"]: d for records in got.values() for d in (json.loads(r.value) for r in records)
    }


async def test_windows_count_across_batches_types_and_a_restart(
    broker: EmbeddedBroker, trained_models: Path, tmp_path: Path
) -> None:
    """Three countries in ten minutes is reviewed even when the third payment comes to a
    new process (state rebuilt from the ledger); a password-reset ticket then a large
    transfer is held; the same transfer without the ticket is approved."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await migrate.upgrade(db)
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        database_url=db,
        data_dir=tmp_path / "data",
        models_dir=trained_models,
        rules_dir=_rules(tmp_path),
        batch_wait_ms=20,
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    first = [
        _tx("tx-1", "acct-1", T0, 600, "GB"),
        _tx("tx-2", "acct-1", T0 + timedelta(minutes=1), 700, "FR"),
        _ticket("tk-1", "acct-9", T0, "Password reset does not work"),
    ]
    await _run_until_decided(settings, broker.bootstrap, first)
    second = [
        _tx("tx-3", "acct-1", T0 + timedelta(minutes=3), 800, "ES"),
        _tx("tx-4", "acct-2", T0 + timedelta(minutes=3), 800, "ES"),
        _tx("tx-5", "acct-9", T0 + timedelta(minutes=30), 3000, "DE"),
        _tx("tx-6", "acct-8", T0 + timedelta(minutes=30), 3000, "DE"),
        _tx("tx-7", "acct-1", T0 + timedelta(minutes=30), 900, "IT"),
    ]
    await _run_until_decided(settings, broker.bootstrap, second)

    decided = await _decisions(broker.bootstrap, len(first) + len(second))
    verdict = {event_id: d["decision"] for event_id, d in decided.items()}
    assert verdict == {
        "tx-1": "approve",
        "tx-2": "approve",
        "tk-1": "route_general",
        "tx-3": "review",  # GB, FR, ES within 10 minutes, across two processes
        "tx-4": "approve",  # another account's history does not count
        "tx-5": "hold",  # the ticket 30 minutes earlier, same customer id
        "tx-6": "approve",  # no ticket for this one
        "tx-7": "approve",  # 30 minutes on: the earlier countries have left the window
    }
    rule_reasons, model_reasons = decided["tx-3"]["reasons"][:1], decided["tx-3"]["reasons"][1:]
    assert rule_reasons == ["3 countries in 10 minutes."]
    assert [r.split(":")[0] for r in model_reasons] == ["transaction.fraud v1"]
