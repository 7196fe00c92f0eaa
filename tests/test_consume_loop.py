"""The consume loop under failure, in-process against a real broker and a real SQLite file:
a batch that cannot be stored is rewound and retried, and its offsets are not committed
until it is stored and published."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from app.inference.scoring import ScoredBatch, Scorer
from app.pipeline.processor import BatchProcessor
from app.settings import Settings
from app.simulator.generate import generate
from app.store import create_engine, migrate
from app.store.registry import ModelRegistry
from app.trainer.bootstrap import ensure_champions
from app.wiring import consume_loop, start_components
from connectors.broker import EmbeddedBroker
from schemas import EventBase
from tests.harness import header, produce, read_topics, wait_until
from tests.shipped import CATALOG

pytestmark = [pytest.mark.kafka, pytest.mark.sqlite]


def _settings(broker: EmbeddedBroker, db_path: Path, models: Path, tmp_path: Path) -> Settings:
    return Settings(
        kafka_bootstrap=broker.bootstrap,
        database_url=f"sqlite+aiosqlite:///{db_path}",
        data_dir=tmp_path / "data",
        models_dir=models,
        batch_wait_ms=20,
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )


async def test_a_batch_that_cannot_be_stored_is_retried_until_it_is_and_nothing_is_lost(
    broker: EmbeddedBroker, trained_models: Path, tmp_path: Path
) -> None:
    """While another writer holds the SQLite file locked, batches fail and are rewound; once
    the lock is gone every event is decided exactly once."""
    db_path = tmp_path / "ledger.db"
    settings = _settings(broker, db_path, trained_models, tmp_path)
    await migrate.upgrade(f"sqlite+aiosqlite:///{db_path}")
    await _register_models(f"sqlite+aiosqlite:///{db_path}", trained_models)

    locked, release = threading.Event(), threading.Event()

    def hold_write_lock() -> None:
        conn = sqlite3.connect(db_path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(60)
        conn.execute("ROLLBACK")
        conn.close()

    holder = threading.Thread(target=hold_write_lock)
    holder.start()
    assert locked.wait(10)
    events = list(generate(200, seed=21, malformed_rate=0.0))
    try:
        async with start_components(settings) as components:
            loop = consume_loop(components, max_backoff_s=0.5)
            task = asyncio.create_task(loop.run())
            await asyncio.wait_for(loop.ready.wait(), 30)
            await produce(broker.bootstrap, events)
            await wait_until(lambda: loop.failed_batches >= 1, timeout=60)
            assert loop.batches == 0, "a batch was committed while the ledger was locked"
            release.set()
            await wait_until(lambda: loop.batches >= 1, timeout=60)
            got = await read_topics(
                broker.bootstrap,
                [f"decisions.{t}" for t in ("order", "ticket", "transaction")],
                until=len(events),
            )
            loop.stop()
            await task
    finally:
        release.set()
        holder.join()
    ids = Counter(json.loads(r.value)["event_id"] for records in got.values() for r in records)
    assert set(ids) == {e.event_id for e in events}
    assert max(ids.values()) == 1


async def _register_models(url: str, models: Path) -> None:
    """Start-up registers the first models (a write): do it before the lock is taken, as
    this test is about batches failing, not start-up."""
    engine = create_engine(url)
    try:
        await ensure_champions(ModelRegistry(engine), models, CATALOG)
    finally:
        await engine.dispose()


class ScorerThatCrashesOn(Scorer):
    """A real scorer, except that it raises on one event: a model bug triggered by one input."""

    def __init__(self, inner: Scorer, poison_id: str) -> None:
        super().__init__(inner.champions, inner.shadows)
        self._poison_id = poison_id

    def score_batch(self, event_type: str, events: Sequence[EventBase]) -> ScoredBatch:
        if any(e.event_id == self._poison_id for e in events):
            raise ValueError(f"model cannot handle {self._poison_id}")
        return super().score_batch(event_type, events)


async def test_a_poison_event_is_dead_lettered_and_the_rest_of_its_batch_is_decided(
    broker: EmbeddedBroker, trained_models: Path, tmp_path: Path
) -> None:
    """An event that makes deciding fail every time ends in dlq.<type> with reason
    processing_error after a few retries; every other event gets its one decision."""
    db_path = tmp_path / "ledger.db"
    settings = _settings(broker, db_path, trained_models, tmp_path)
    await migrate.upgrade(f"sqlite+aiosqlite:///{db_path}")
    events = [e for e in generate(120, seed=22, malformed_rate=0.0) if e.event_type == "order"]
    poison = events[len(events) // 2]
    assert poison.event_id is not None
    async with start_components(settings) as c:
        processor = BatchProcessor(
            ledger=c.ledger,
            scorer=ScorerThatCrashesOn(c.scorer, poison.event_id),
            rules=c.rules,
            publish=c.publish,
            topic_for=settings.topic,  # type: ignore[arg-type]
            max_event_bytes=settings.max_event_bytes,
            types=c.types,
        )
        components = dataclasses.replace(c, processor=processor)
        loop = consume_loop(components, max_backoff_s=0.2, isolate_after=2)
        task = asyncio.create_task(loop.run())
        await asyncio.wait_for(loop.ready.wait(), 30)
        await produce(broker.bootstrap, events)
        got = await read_topics(
            broker.bootstrap, ["decisions.order", "dlq.order"], until=len(events)
        )
        loop.stop()
        await task
        processor.close()
        letters = await c.ledger.dead_letters()
    decided = Counter(json.loads(r.value)["event_id"] for r in got["decisions.order"])
    assert set(decided) == {e.event_id for e in events} - {poison.event_id}
    assert max(decided.values()) == 1
    assert [r.value for r in got["dlq.order"]] == [poison.value]
    assert header(got["dlq.order"][0], "arbiter.reason") == "processing_error"
    assert [(d.reason, d.event_id) for d in letters] == [("processing_error", poison.event_id)]
    assert loop.failed_batches >= 2
