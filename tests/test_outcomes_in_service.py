"""Outcomes through a running consumer: a real broker, a real SQLite ledger, the real
first models. Each outcome arriving on ``outcomes.<type>`` is kept and joined to its
decision — also one that overtakes its event, one repeated, one for an event never
seen — and a bad one goes to ``dlq.<type>`` with its reason."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from app.processes.simulate import emit
from app.settings import Settings
from app.simulator.generate import SimEvent, generate
from app.values import BatchResult
from app.wiring import consume_loop, start_components
from connectors.broker import EmbeddedBroker
from tests.harness import header, produce, read_topics, wait_decided, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.sqlite, pytest.mark.timeout(240)]


def _outcome(event: SimEvent, fraud: bool, *, day: int = 2) -> SimEvent:
    body = {
        "event_id": event.event_id,
        "event_type": "transaction",
        "partition_key": event.key.decode(),
        "occurred_at": f"2026-03-0{day}T10:00:00Z",
        "labels": {"fraud": fraud},
        "source": "chargebacks",
    }
    return SimEvent("transaction", event.key, json.dumps(body).encode(), event.event_id, None, {})


def _raw(value: bytes) -> SimEvent:
    return SimEvent("transaction", b"acct-x", value, None, "x", {})


async def test_outcomes_are_kept_joined_counted_and_bad_ones_dead_lettered(
    broker: EmbeddedBroker, trained_models: Path, tmp_path: Path
) -> None:
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
        data_dir=tmp_path / "data",
        models_dir=trained_models,
        batch_wait_ms=20,
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
        auto_migrate=True,
    )
    txs = [e for e in generate(200, seed=31, malformed_rate=0.0) if e.event_type == "transaction"]
    decided_first, late = txs[:20], txs[20]
    counts: Counter[tuple[str, str]] = Counter()

    def listen(result: BatchResult) -> None:
        counts.update(result.outcomes)

    async with start_components(settings) as c:
        loop = consume_loop(c, listeners=[listen])
        task = asyncio.create_task(loop.run())
        await asyncio.wait_for(loop.ready.wait(), 30)
        store = c.outcomes
        await produce(broker.bootstrap, decided_first)
        await wait_decided(c.ledger, [e.event_id or "" for e in decided_first])

        unknown = _outcome(
            SimEvent("transaction", b"acct-0", b"", "txn-never-seen", None, {}), True
        )
        outcomes = [
            *(_outcome(e, i % 3 == 0) for i, e in enumerate(decided_first[:10])),
            _outcome(decided_first[0], True),  # the same report again
            _outcome(late, True),  # overtakes its event
            unknown,
            _raw(b"{not json"),
            _raw(json.dumps({**json.loads(unknown.value), "event_type": "order"}).encode()),
        ]
        await emit(broker.bootstrap, outcomes, topic_for=lambda t: f"outcomes.{t}")
        await wait_until(lambda: sum(counts.values()) >= 13, timeout=60)
        assert counts == {
            ("transaction", "stored"): 10,
            ("transaction", "before_decision"): 2,
            ("transaction", "duplicate"): 1,
        }
        assert len(await store.labelled("transaction")) == 10
        assert await store.pending() == 2

        await produce(broker.bootstrap, [late])
        await wait_decided(c.ledger, [late.event_id or ""])
        labelled = {x.event_id: x.labels for x in await store.labelled("transaction")}
        assert labelled[late.event_id] == {"fraud": True}
        assert len(labelled) == 11
        assert await store.pending() == 1  # the event Arbiter never saw
        loop.stop()
        await task

    dead = await read_topics(broker.bootstrap, ["dlq.transaction"], until=2)
    reasons = sorted(header(r, "arbiter.reason") or "" for r in dead["dlq.transaction"])
    assert reasons == ["malformed_json", "wrong_type"]
