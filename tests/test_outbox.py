"""The webhook outbox end to end, on a real SQLite file and a real PostgreSQL database, with
a real HTTP receiver in the test process: the relay signs, retries on schedule, fails
4xx at once, honours Retry-After, dead-letters, replays, keeps per-key order, and after
being killed every delivery still arrives at least once. A decision and its deliveries
are stored together or not at all."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.inference.scoring import Scorer
from app.ops.deliveries import retry_deliveries
from app.outbox.config import Endpoint, Endpoints
from app.pipeline.processor import BatchProcessor
from app.settings import Settings
from app.simulator.generate import generate
from app.store import Ledger
from app.store.outbox import Delivery, OutboxStore
from app.store.tables import decisions as decisions_table
from app.store.tables import deliveries as deliveries_table
from app.values import DeliveryRecord, InRecord, OutMessage
from app.wiring import event_types, load_rules_engine
from connectors.webhooks.relay import Relay, RelayPolicy
from tests.test_store import decision
from tests.webhook_receiver import Receiver, serve

SECRET = "test-secret"


class Clock:
    """A clock the test moves by hand (whole seconds from the real now, so replays made
    with the real clock are due)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
        self.start = self.now

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> Clock:
        self.now = self.start + timedelta(seconds=seconds)
        return self


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def endpoints(receiver: Receiver, **kw: Any) -> Endpoints:
    hook = Endpoint("hook", receiver.url("hook"), SECRET, (("X-Team", "fraud"),), **kw)
    return Endpoints(active={"hook": hook})


async def seed(ledger: Ledger, clock: Clock, ids: list[str], keys: list[str] | None = None) -> None:
    """Store decisions for ``ids`` and one delivery each to ``hook``, as the processor does."""
    keys = keys or ["cust-1"] * len(ids)
    records = [decision(i, partition_key=k) for i, k in zip(ids, keys, strict=True)]
    owed = [
        DeliveryRecord(i, "hook", k, {"event_id": i, "decision": "review"}, clock())
        for i, k in zip(ids, keys, strict=True)
    ]
    await ledger.record(records, [], deliveries=owed)


async def rows(engine: AsyncEngine) -> list[Delivery]:
    return sorted(await OutboxStore(engine).recent(limit=1000), key=lambda d: d.id)


def relay(engine: AsyncEngine, eps: Endpoints, client: httpx.AsyncClient, clock: Clock) -> Relay:
    policy = RelayPolicy(backoff_base_s=2.0, backoff_cap_s=300.0, lease_s=60)
    return Relay(engine, eps, client, clock=clock, holder="test", policy=policy, rand=lambda: 0.5)


async def deliveries_cli(db_url: str, *args: str) -> str:
    """Run ``arbiter deliveries <args>`` in a child process (it configures logging for
    itself); what it printed. A wide terminal keeps table cells whole."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from app.cli.deliveries import deliveries_app; deliveries_app()",
        *args,
        env={**os.environ, "ARBITER_DATABASE_URL": db_url, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, text
    return text


async def test_a_delivery_is_signed_so_the_receiver_can_verify_it(
    ledger: Ledger, engine: AsyncEngine, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """The receiver checks HMAC-SHA256(secret, "<timestamp>.<body>") as docs/webhooks.md says."""
    clock = Clock()
    await seed(ledger, clock, ["e1"])
    assert await relay(engine, endpoints(receiver), client, clock).run_once() == 1
    (got,) = receiver.on("hook")
    ts = got.headers["x-arbiter-timestamp"]
    assert int(ts) == int(clock.now.timestamp())
    mac = hmac.new(SECRET.encode(), f"{ts}.".encode() + got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(got.headers["x-arbiter-signature"], f"v1={mac}")
    assert got.headers["content-type"] == "application/json"
    assert got.headers["idempotency-key"] == "e1:hook"
    assert got.headers["x-team"] == "fraud"
    assert json.loads(got.body) == {"event_id": "e1", "decision": "review"}
    (row,) = await rows(engine)
    assert (row.status, row.attempts, row.last_status, row.delivered_at) == (
        "delivered",
        1,
        200,
        clock.now,
    )


async def test_5xx_is_retried_on_the_backoff_schedule_until_it_arrives(
    ledger: Ledger, engine: AsyncEngine, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """503, 503, 200: three attempts at 0 s, 1 s and 3 s (base 2 s, jitter 0.5), none early."""
    clock = Clock()
    await seed(ledger, clock, ["e1"])
    receiver.answer("hook", 503, 503)
    r = relay(engine, endpoints(receiver), client, clock)
    for seconds, delivered in ((0, 0), (0.9, 0), (1, 0), (2.9, 0), (3, 1), (60, 0)):
        clock.at(seconds)
        assert await r.run_once() == delivered, f"at {seconds} s"
        if seconds == 1:
            (row,) = await rows(engine)
            assert (row.status, row.attempts, row.last_status) == ("pending", 2, 503)
            assert row.next_attempt_at == clock.start + timedelta(seconds=3)
            assert row.last_error is not None
            assert row.last_error.startswith("HTTP 503")
    got = receiver.on("hook")
    start = int(clock.start.timestamp())
    assert [int(g.headers["x-arbiter-timestamp"]) - start for g in got] == [0, 1, 3]
    assert [g.headers["x-arbiter-attempt"] for g in got] == ["1", "2", "3"]
    assert {g.key for g in got} == {"e1:hook"}
    (row,) = await rows(engine)
    assert (row.status, row.attempts, row.last_status) == ("delivered", 3, 200)


async def test_a_4xx_fails_at_once_and_is_never_sent_again(
    ledger: Ledger, engine: AsyncEngine, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """400 means the receiver will not take it: failed (dead-lettered) after one attempt."""
    clock = Clock()
    await seed(ledger, clock, ["e1"])
    receiver.answer("hook", 400)
    r = relay(engine, endpoints(receiver), client, clock)
    assert await r.run_once() == 0
    clock.at(3600)
    assert await r.run_once() == 0
    assert len(receiver.on("hook")) == 1
    (row,) = await rows(engine)
    assert (row.status, row.attempts, row.last_status) == ("failed", 1, 400)


async def test_429_waits_as_long_as_retry_after_says(
    ledger: Ledger, engine: AsyncEngine, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """Retry-After: 30 on a 429 moves the next attempt to 30 s, not the 1 s backoff."""
    clock = Clock()
    await seed(ledger, clock, ["e1"])
    receiver.answer("hook", (429, {"Retry-After": "30"}))
    r = relay(engine, endpoints(receiver), client, clock)
    assert await r.run_once() == 0
    (row,) = await rows(engine)
    assert (row.status, row.last_status, row.next_attempt_at) == (
        "pending",
        429,
        clock.start + timedelta(seconds=30),
    )
    clock.at(29)
    assert await r.run_once() == 0
    clock.at(30)
    assert await r.run_once() == 1
    assert len(receiver.on("hook")) == 2


async def test_after_max_attempts_a_delivery_is_dead_and_deliveries_retry_replays_it(
    db_url: str,
    ledger: Ledger,
    engine: AsyncEngine,
    receiver: Receiver,
    client: httpx.AsyncClient,
) -> None:
    """Three 500s with max_attempts 3 → failed, listed by `deliveries list --failed`;
    `deliveries retry --all-failed` makes it pending and the next round delivers it."""
    clock = Clock()
    r = relay(engine, endpoints(receiver, max_attempts=3), client, clock)
    await seed(ledger, clock, ["e2"])
    assert await r.run_once() == 1
    await seed(ledger, clock, ["e1"])
    receiver.answer("hook", 500, 500, 500)
    assert await r.run_once() == 0
    for seconds in (1, 3):
        clock.at(seconds)
        assert await r.run_once() == 0
    failed = [d for d in await rows(engine) if d.status == "failed"]
    assert [(d.event_id, d.attempts, d.last_status) for d in failed] == [("e1", 3, 500)]
    clock.at(3600)
    assert await r.run_once() == 0

    listed = await deliveries_cli(db_url, "list", "--failed")
    assert "e1" in listed
    assert "e2" not in listed
    assert "HTTP 500" in listed
    replay = await deliveries_cli(db_url, "retry", "--all-failed")
    assert "1 delivery queued" in replay
    (row,) = [d for d in await rows(engine) if d.event_id == "e1"]
    assert (row.status, row.attempts) == ("pending", 0)
    assert await r.run_once() == 1
    assert [g.key for g in receiver.on("hook")].count("e1:hook") == 4
    assert {d.status for d in await rows(engine)} == {"delivered"}
    # A delivered one can be replayed by id too; an unknown id changes nothing.
    assert await retry_deliveries(Settings(database_url=db_url), [row.id]) == 1
    with pytest.raises(Exception, match="no delivery with id 999"):
        await retry_deliveries(Settings(database_url=db_url), [row.id, 999])


async def test_an_ordered_endpoint_holds_a_key_back_while_its_older_delivery_is_retried(
    ledger: Ledger, engine: AsyncEngine, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """a1 fails once (503): a2 (same key) waits until a1 arrived; b1 (another key) does not."""
    clock = Clock()
    await seed(ledger, clock, ["a1", "a2", "b1"], ["cust-a", "cust-a", "cust-b"])
    receiver.answer("a1:hook", 503)
    r = relay(engine, endpoints(receiver, ordered=True), client, clock)
    assert await r.run_once() == 1  # b1; a1 got its 503; a2 held back
    assert await r.run_once() == 0  # a1 not due yet, so a2 still waits
    clock.at(1)
    assert await r.run_once() == 1  # a1
    assert await r.run_once() == 1  # then a2
    order = [json.loads(g.body)["event_id"] for g in receiver.on("hook")]
    assert sorted(order[:2]) == ["a1", "b1"]
    assert order[2:] == ["a1", "a2"]


async def test_an_unordered_endpoint_does_not_hold_a_key_back(
    ledger: Ledger, engine: AsyncEngine, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """Without ``ordered`` a later delivery of the key goes while the older one waits."""
    clock = Clock()
    await seed(ledger, clock, ["a1", "a2"], ["cust-a", "cust-a"])
    receiver.answer("a1:hook", 503)
    r = relay(engine, endpoints(receiver), client, clock)
    assert await r.run_once() == 1
    assert {d.event_id: d.status for d in await rows(engine)} == {
        "a1": "pending",
        "a2": "delivered",
    }


RELAY_PROCESS = """
import asyncio, sys
import httpx
from app.outbox.config import Endpoint, Endpoints
from connectors.webhooks.relay import Relay, RelayPolicy
from app.store.db import create_engine

async def main(url: str, target: str) -> None:
    eps = Endpoints(active={"hook": Endpoint("hook", target, "test-secret")})
    async with httpx.AsyncClient() as client:
        policy = RelayPolicy(lease_s=2.0, batch=5, concurrency=5, poll_s=0.05)
        relay = Relay(create_engine(url), eps, client, holder="doomed", policy=policy)
        await relay.run_forever(asyncio.Event())

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.slow
async def test_a_relay_killed_mid_delivery_loses_nothing_and_receivers_can_dedupe(
    db_url: str, ledger: Ledger, engine: AsyncEngine, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """SIGKILL a relay process while the receiver holds its requests: after its lease runs
    out another relay sends everything; every key arrives, the held ones twice."""
    clock = Clock()
    ids = [f"e{i:02d}" for i in range(20)]
    await seed(ledger, clock, ids)
    receiver.released.clear()  # requests hang until released
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RELAY_PROCESS, db_url, receiver.url("hook")
    )
    try:
        for _ in range(300):
            if len(receiver.on("hook")) >= 5 or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert proc.returncode is None, "the relay process died by itself"
        held = {g.key for g in receiver.on("hook")}
        assert held
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
    claimed = [d for d in await rows(engine) if d.claimed_by == "doomed"]
    assert {d.idempotency_key for d in claimed} == held
    assert {d.status for d in await rows(engine)} == {"pending"}
    receiver.released.set()

    survivor = Relay(engine, endpoints(receiver), client, holder="survivor")
    delivered = 0
    for _ in range(100):
        delivered += await survivor.run_once()
        if delivered == len(ids):
            break
        await asyncio.sleep(0.1)
    assert delivered == len(ids)
    assert receiver.keys() == {f"{i}:hook" for i in ids}
    counts = Counter(g.key for g in receiver.on("hook"))
    assert {k for k, n in counts.items() if n > 1} == held
    assert {d.status for d in await rows(engine)} == {"delivered"}


# --- the outbox row and the decision: one transaction -------------------------------


async def _count(engine: AsyncEngine, table: sa.Table) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


async def test_a_batch_stores_decisions_and_their_deliveries_together_or_not_at_all(
    ledger: Ledger, engine: AsyncEngine
) -> None:
    """If writing the deliveries fails, no decision of the batch stays; when it works each
    new decision has its delivery; a redelivered batch adds neither."""
    settings = Settings()
    sent: list[OutMessage] = []

    async def publish(messages: Any) -> None:
        sent.extend(messages)

    hook = Endpoint("hook", "http://127.0.0.1:9/hook", SECRET, subscribed=True)
    processor = BatchProcessor(
        ledger=ledger,
        scorer=Scorer({}),
        rules=load_rules_engine(settings),
        publish=publish,
        topic_for=settings.topic,  # type: ignore[arg-type]
        max_event_bytes=settings.max_event_bytes,
        types=event_types(settings),
        endpoints=Endpoints(active={"hook": hook}),
    )
    events = [e for e in generate(40, seed=5, malformed_rate=0.0) if e.event_type == "transaction"]
    records = [
        InRecord("transaction", "events.transaction", 0, i, e.key, e.value, 1_700_000_000_000)
        for i, e in enumerate(events)
    ]

    def refuse(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO DELIVERIES"):
            raise RuntimeError("deliveries refused by the test")

    try:
        event.listen(engine.sync_engine, "before_cursor_execute", refuse)
        with pytest.raises(Exception, match="deliveries refused"):
            await processor.process(records)
        event.remove(engine.sync_engine, "before_cursor_execute", refuse)
        assert (await _count(engine, decisions_table), await _count(engine, deliveries_table)) == (
            0,
            0,
        )
        assert sent == []

        result = await processor.process(records)
        assert sum(result.decided.values()) == len(events)
        stored = await rows(engine)
        assert sorted(d.event_id for d in stored) == sorted(e.event_id or "" for e in events)
        assert {d.status for d in stored} == {"pending"}
        first = stored[0]
        assert first.payload["event_id"] == first.event_id
        assert first.idempotency_key == f"{first.event_id}:hook"

        again = await processor.process(records)
        assert again.redelivered == len(events)
        assert await _count(engine, deliveries_table) == len(events)
    finally:
        processor.close()
