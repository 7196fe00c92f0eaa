"""The consume loop under failure, in-process against a real broker and a real SQLite file:
a batch that cannot be stored is rewound and retried, and its offsets are not committed
until it is stored and published."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pytest

from app.service import ConsumeLoop, start_components
from app.settings import Settings
from app.simulator.generate import generate
from app.store import migrate
from connectors.broker import EmbeddedBroker
from tests.harness import produce, read_topics, wait_until

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
            loop = ConsumeLoop(components, max_backoff_s=0.5)
            task = asyncio.create_task(loop.run())
            await asyncio.wait_for(loop.ready.wait(), 30)
            await produce(broker.bootstrap, events)
            await wait_until(lambda: loop.failed_batches >= 1, timeout=60)
            assert loop.batches == 0, "a batch was committed while the ledger was locked"
            release.set()
            await wait_until(lambda: loop.batches >= 1, timeout=60)
            got = await read_topics(
                broker.bootstrap, [f"decisions.{t}" for t in ("order", "ticket", "transaction")],
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
