"""End to end through a real broker: `arbiter run` as a process, real SQLite and PostgreSQL.

These are the delivery guarantees of DESIGN.md checked from the outside: every valid
event gets exactly one decision (on the topic and in the ledger), every malformed one a
dead letter with its reason, redelivery decides nothing twice, and a stop/restart or a
crash mid-stream loses nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.processes.simulate import emit
from app.simulator.generate import SimEvent, generate
from app.store import migrate
from app.store.db import create_engine
from app.store.ledger import Ledger
from connectors.broker import EmbeddedBroker
from tests.harness import ArbiterProcess, header, produce, read_topics, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TYPES = ("order", "ticket", "transaction")


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated ledger database: a SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        request.applymarker(pytest.mark.sqlite)
        url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    else:
        request.applymarker(pytest.mark.postgres)
        url = request.getfixturevalue("pg_url")
    await migrate.upgrade(url)
    return url


@pytest.fixture
def arbiter(
    broker: EmbeddedBroker, db_url: str, trained_models: Path, tmp_path: Path
) -> AsyncIterator[ArbiterProcess]:
    env = {
        "ARBITER_KAFKA_BOOTSTRAP": broker.bootstrap,
        "ARBITER_DATABASE_URL": db_url,
        "ARBITER_DATA_DIR": str(tmp_path / "data"),
        "ARBITER_MODELS_DIR": str(trained_models),
        "ARBITER_BATCH_WAIT_MS": "20",
    }
    proc = ArbiterProcess(tmp_path / "arbiter.log", env)
    yield proc  # type: ignore[misc]
    proc.ensure_stopped()


def _split(events: list[SimEvent]) -> tuple[list[SimEvent], list[SimEvent]]:
    valid = [e for e in events if e.malformed is None]
    bad = [e for e in events if e.malformed is not None]
    return valid, bad


async def _collect(broker: EmbeddedBroker, expected: int) -> tuple[list, list]:
    topics = [f"decisions.{t}" for t in TYPES] + [f"dlq.{t}" for t in TYPES]
    got = await read_topics(broker.bootstrap, topics, until=expected)
    decisions = [r for t in TYPES for r in got[f"decisions.{t}"]]
    dead = [r for t in TYPES for r in got[f"dlq.{t}"]]
    return decisions, dead


async def test_every_valid_event_gets_one_decision_and_every_malformed_one_a_dead_letter(
    broker: EmbeddedBroker, arbiter: ArbiterProcess, db_url: str
) -> None:
    """1,000 mixed events (5 % malformed): one decision each on the topic and in the ledger,
    each malformed one on dlq.<type> and in dead_letters with its reason, nothing else."""
    events = list(generate(1000, seed=12, malformed_rate=0.05))
    valid, bad = _split(events)
    assert len(bad) >= 30
    assert {e.malformed for e in bad} == {
        "malformed_json",
        "not_an_object",
        "validation",
        "oversize",
    }

    await arbiter.start().wait_for_log("consuming")
    await produce(broker.bootstrap, events)
    decisions, dead = await _collect(broker, len(events))

    ids = Counter(json.loads(r.value)["event_id"] for r in decisions)
    assert set(ids) == {e.event_id for e in valid}
    assert max(ids.values()) == 1
    for record in decisions:
        body = json.loads(record.value)
        assert record.key == body["partition_key"].encode()
        assert body["decision"]
        assert body["reasons"]
        assert body["model_versions"]

    assert sorted(r.value for r in dead) == sorted(e.value for e in bad)
    reasons = Counter(header(r, "arbiter.reason") for r in dead)
    assert reasons == Counter(e.malformed for e in bad)

    engine = create_engine(db_url)
    try:
        ledger = Ledger(engine)
        stored = await ledger.find_decisions([e.event_id for e in valid if e.event_id])
        assert len(stored) == len(valid)
        assert all(s.published for s in stored.values())
        assert await ledger.count_decisions() == len(valid)
        assert await ledger.count_dead_letters() == len(bad)
        letters = await ledger.dead_letters(limit=10_000)
        assert Counter(d.reason for d in letters) == Counter(e.malformed for e in bad)
        assert all(d.detail for d in letters)
    finally:
        await engine.dispose()
    assert arbiter.terminate() == 0


async def test_producing_the_same_events_twice_gives_no_second_decision(
    broker: EmbeddedBroker, arbiter: ArbiterProcess, db_url: str
) -> None:
    """Redelivery: a second copy of every event finds its decision in the ledger."""
    events = list(generate(300, seed=12, malformed_rate=0.0))
    await arbiter.start().wait_for_log("consuming")
    await produce(broker.bootstrap, events)
    first, _ = await _collect(broker, len(events))
    assert len(first) == len(events)

    await produce(broker.bootstrap, events)
    await wait_until(lambda: _redelivered(arbiter) >= len(events))
    decisions, _ = await _collect(broker, len(events))
    assert len(decisions) == len(events)
    assert _redelivered(arbiter) == len(events)
    assert await _ledger_decisions(db_url) == len(events)
    assert arbiter.terminate() == 0


def _redelivered(proc: ArbiterProcess) -> int:
    return sum(e.get("redelivered", 0) for e in proc.log_lines() if e.get("event") == "batch")


async def _ledger_decisions(db_url: str) -> int:
    engine = create_engine(db_url)
    try:
        return await Ledger(engine).count_decisions()
    finally:
        await engine.dispose()


async def _interrupt_mid_stream(
    broker: EmbeddedBroker, arbiter: ArbiterProcess, events: list[SimEvent], *, crash: bool
) -> None:
    """Start `arbiter run`, stream ``events`` at 1,500/s, stop it (SIGTERM, or SIGKILL when
    ``crash``) once 300 are decided, restart it, and wait until every event is produced."""
    await arbiter.start().wait_for_log("consuming")
    producing = asyncio.create_task(
        emit(broker.bootstrap, events, topic_for=lambda t: f"events.{t}", rate=1500)
    )
    await wait_until(lambda: _decided(arbiter) >= 300)
    if crash:
        arbiter.kill()
    else:
        assert arbiter.terminate() == 0
        assert _decided(arbiter) < len(events), "stopped too late to test a restart"
    await arbiter.start().wait_for_log("consuming", after=1)
    await producing


def _decided(proc: ArbiterProcess) -> int:
    return sum(e.get("decided", 0) for e in proc.log_lines() if e.get("event") == "batch")


async def test_graceful_stop_and_restart_mid_stream_loses_nothing_and_decides_nothing_twice(
    broker: EmbeddedBroker, arbiter: ArbiterProcess, db_url: str
) -> None:
    """SIGTERM mid-stream finishes the batch, commits, exits 0; the restart picks up the rest,
    and every event ends with exactly one decision on the topic and in the ledger."""
    events = list(generate(3000, seed=13, malformed_rate=0.0))
    await _interrupt_mid_stream(broker, arbiter, events, crash=False)
    decisions, _ = await _collect(broker, len(events))
    ids = Counter(json.loads(r.value)["event_id"] for r in decisions)
    assert set(ids) == {e.event_id for e in events}
    assert max(ids.values()) == 1
    assert await _ledger_decisions(db_url) == len(events)
    assert arbiter.terminate() == 0


async def test_crash_mid_stream_loses_nothing_and_stores_each_decision_once(
    broker: EmbeddedBroker, arbiter: ArbiterProcess, db_url: str
) -> None:
    """SIGKILL mid-stream (no clean shutdown): after a restart every event has exactly one
    ledger row; the topic holds each decision at least once, copies identical."""
    events = list(generate(3000, seed=14, malformed_rate=0.0))
    await _interrupt_mid_stream(broker, arbiter, events, crash=True)
    decisions, _ = await _collect(broker, len(events))
    by_id: dict[str, set[bytes]] = {}
    for record in decisions:
        by_id.setdefault(json.loads(record.value)["event_id"], set()).add(record.value)
    assert set(by_id) == {e.event_id for e in events}
    assert all(len(copies) == 1 for copies in by_id.values()), "a redelivery re-decided"
    assert await _ledger_decisions(db_url) == len(events)
    assert arbiter.terminate() == 0
