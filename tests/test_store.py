"""The decision ledger against a real SQLite file and a real PostgreSQL database.

Every ledger test runs on both backends (the ``db_url`` fixture is parametrized), so
SQLite in the embedded default and PostgreSQL in production keep the same guarantees:
one row per event_id, one dead letter per position, aware UTC datetimes.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ConfigError, TransientError
from app.store import (
    Ledger,
    check_connection,
    create_engine,
    current_revision,
    head_revision,
    require_current,
    upgrade,
)
from app.store.ledger import decision_rows, percentiles
from app.store.tables import dead_letters as dead_letters_table
from app.store.tables import decisions as decisions_table
from app.store.tables import metadata
from app.values import DeadLetterRecord, DecisionRecord

PG_ADMIN_URL = os.environ.get(
    "ARBITER_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


# --- fixtures -----------------------------------------------------------------------


def decision(event_id: str, **overrides: Any) -> DecisionRecord:
    fields: dict[str, Any] = {
        "event_id": event_id,
        "event_type": "order",
        "partition_key": "cust-1",
        "decision": "approve",
        "actions": [{"type": "publish", "topic": "decisions.order"}],
        "scores": {"fraud": 0.12},
        "model_versions": {"fraud": "v3"},
        "rules_fired": ["low_risk"],
        "reasons": ["score below 0.5"],
        "payload": {"event_id": event_id, "amount": 42.5, "items": [1, 2]},
        "latency_ms": 3.5,
        "occurred_at": T0,
        "decided_at": T0 + timedelta(milliseconds=4),
        "source_topic": "events.order",
        "source_partition": 0,
        "source_offset": 0,
    }
    fields.update(overrides)
    return DecisionRecord(**fields)


def dead_letter(offset: int, **overrides: Any) -> DeadLetterRecord:
    fields: dict[str, Any] = {
        "event_type": "order",
        "source_topic": "events.order",
        "source_partition": 1,
        "source_offset": offset,
        "event_id": None,
        "reason": "malformed_json",
        "detail": "line 1: expected a JSON object",
        "raw": b"{not json\x00\xff",
        "key": b"cust-9",
        "created_at": T0,
    }
    fields.update(overrides)
    return DeadLetterRecord(**fields)


# --- migrations ---------------------------------------------------------------------


async def test_upgrade_creates_the_tables_of_the_metadata_at_head(db_url: str) -> None:
    """After upgrade the schema equals tables.py and the database is at the head revision."""
    eng = create_engine(db_url)
    try:
        assert await current_revision(eng) == head_revision()

        def diff(conn: sa.Connection) -> list[Any]:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))

        async with eng.connect() as conn:
            assert await conn.run_sync(diff) == []
        await require_current(eng)
    finally:
        await eng.dispose()


async def test_upgrade_twice_is_harmless(db_url: str) -> None:
    """Running upgrade on a database already at head changes nothing."""
    await upgrade(db_url)
    eng = create_engine(db_url)
    try:
        assert await current_revision(eng) == head_revision()
    finally:
        await eng.dispose()


async def test_require_current_refuses_an_unmigrated_database(empty_db_url: str) -> None:
    """An empty database is refused with the revision it needs and the command to run."""
    eng = create_engine(empty_db_url)
    try:
        assert await current_revision(eng) is None
        with pytest.raises(ConfigError) as info:
            await require_current(eng)
    finally:
        await eng.dispose()
    assert str(info.value) == (
        f"database schema is at empty, this Arbiter needs {head_revision()}: "
        "run `arbiter db upgrade` (or set ARBITER_DATABASE_AUTO_MIGRATE=true)"
    )


async def test_create_engine_makes_the_sqlite_folder_and_uses_wal(tmp_path: Path) -> None:
    """A SQLite URL under a missing folder gets the folder, and the file is in WAL mode."""
    path = tmp_path / "a" / "b" / "arbiter.db"
    eng = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        assert path.parent.is_dir()
        async with eng.connect() as conn:
            assert await conn.scalar(sa.text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(sa.text("PRAGMA busy_timeout")) == 5000
            assert await conn.scalar(sa.text("PRAGMA synchronous")) == 1  # NORMAL
            assert await conn.scalar(sa.text("PRAGMA foreign_keys")) == 1
    finally:
        await eng.dispose()


# --- connection checks --------------------------------------------------------------


async def test_check_connection_passes_on_a_reachable_database(db_url: str) -> None:
    """check_connection returns quietly when the database answers."""
    eng = create_engine(db_url)
    try:
        await check_connection(eng, db_url)
    finally:
        await eng.dispose()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://postgres:s3cret-pw@127.0.0.1:1/x",
            "postgresql+asyncpg://postgres@127.0.0.1:1/x (password hidden)",
        ),
        (
            "postgresql+asyncpg://postgres@127.0.0.1:1/x",
            "postgresql+asyncpg://postgres@127.0.0.1:1/x",
        ),
    ],
)
async def test_check_connection_on_an_unreachable_port_raises_config_error(
    url: str, shown: str
) -> None:
    """An unreachable database is a ConfigError naming the URL without its password."""
    eng = create_engine(url)
    try:
        with pytest.raises(ConfigError) as info:
            await check_connection(eng, url)
    finally:
        await eng.dispose()
    message = str(info.value)
    assert message.startswith(f"cannot reach the database at {shown}: ")
    assert message.endswith("Start it, or set ARBITER_DATABASE_URL to a reachable database.")
    assert "s3cret" not in message


# --- ledger writes ------------------------------------------------------------------


async def test_record_inserts_a_batch_and_reads_it_back_unchanged(ledger: Ledger) -> None:
    """A batch of decisions and dead letters is stored and found exactly as given."""
    batch = [decision(f"e{i}", source_offset=i) for i in range(3)]
    outcome = await ledger.record(batch, [dead_letter(7)])

    assert outcome.inserted_event_ids == {"e0", "e1", "e2"}
    assert outcome.duplicate_event_ids == frozenset()
    assert outcome.dead_letters_inserted == 1
    found = await ledger.find_decisions(["e0", "e1", "e2", "missing"])
    assert {k: v.record for k, v in found.items()} == {d.event_id: d for d in batch}
    assert not any(v.published for v in found.values())
    assert await ledger.dead_letters() == [dead_letter(7)]


async def test_rerecording_the_same_event_ids_inserts_nothing_and_reports_duplicates(
    ledger: Ledger,
) -> None:
    """A redelivered batch adds no rows and names every event_id as a duplicate."""
    await ledger.record([decision("a"), decision("b")], [])
    outcome = await ledger.record(
        [decision("a", decision="decline"), decision("b"), decision("c")], []
    )

    assert outcome.inserted_event_ids == {"c"}
    assert outcome.duplicate_event_ids == {"a", "b"}
    assert await ledger.count_decisions() == 3
    # The first decision stands; the second attempt's differing result is not stored.
    assert (await ledger.find_decisions(["a"]))["a"].record.decision == "approve"


async def test_same_event_id_twice_in_one_batch_is_stored_once(ledger: Ledger) -> None:
    """Duplicates inside one batch keep the first occurrence."""
    outcome = await ledger.record([decision("x"), decision("x", decision="decline")], [])

    assert outcome.inserted_event_ids == {"x"}
    assert await ledger.count_decisions() == 1
    assert (await ledger.find_decisions(["x"]))["x"].record.decision == "approve"


async def test_concurrent_records_with_overlapping_ids_store_one_row_per_id(db_url: str) -> None:
    """Two writers racing on overlapping event_ids: every id lands exactly once."""
    engines = [create_engine(db_url), create_engine(db_url)]
    try:
        first, second = Ledger(engines[0]), Ledger(engines[1])
        for round_ in range(3):
            ids_a = [f"r{round_}-{i}" for i in range(60)]
            ids_b = [f"r{round_}-{i}" for i in range(30, 90)]
            out_a, out_b = await asyncio.gather(
                first.record([decision(i, decision="a") for i in ids_a], []),
                second.record([decision(i, decision="b") for i in reversed(ids_b)], []),
            )
            everything = set(ids_a) | set(ids_b)
            assert out_a.inserted_event_ids | out_b.inserted_event_ids == everything
            assert out_a.inserted_event_ids.isdisjoint(out_b.inserted_event_ids)
            assert out_a.duplicate_event_ids <= out_b.inserted_event_ids
            assert out_b.duplicate_event_ids <= out_a.inserted_event_ids
            stored = await first.find_decisions(sorted(everything))
            assert {k for k, v in stored.items() if v.record.decision == "a"} == (
                out_a.inserted_event_ids
            )
        assert await first.count_decisions() == 3 * 90
    finally:
        for eng in engines:
            await eng.dispose()


async def test_dead_letter_at_the_same_position_is_stored_once(ledger: Ledger) -> None:
    """A redelivered bad record (same topic, partition, offset) is kept only once."""
    first = await ledger.record([], [dead_letter(5), dead_letter(6)])
    again = await ledger.record([], [dead_letter(5, detail="second try"), dead_letter(8)])

    assert (first.dead_letters_inserted, again.dead_letters_inserted) == (2, 1)
    assert await ledger.count_dead_letters() == 3
    stored = {d.source_offset: d for d in await ledger.dead_letters()}
    assert stored[5].detail == dead_letter(5).detail


async def test_mark_published_shows_in_find_decisions(ledger: Ledger, engine: AsyncEngine) -> None:
    """Published decisions and dead letters carry the first publication time."""
    await ledger.record([decision("p1"), decision("p2")], [dead_letter(1), dead_letter(2)])
    await ledger.mark_published(["p1"], [("events.order", 1, 1)], at=T0)
    await ledger.mark_published(["p1"], [("events.order", 1, 1)], at=T0 + timedelta(hours=1))

    found = await ledger.find_decisions(["p1", "p2"])
    assert (found["p1"].published, found["p2"].published) == (True, False)
    async with engine.connect() as conn:
        decided = await conn.scalar(
            sa.select(decisions_table.c.published_at).where(decisions_table.c.event_id == "p1")
        )
        dead = dict(
            (
                await conn.execute(
                    sa.select(dead_letters_table.c.source_offset, dead_letters_table.c.published_at)
                )
            ).all()
        )
    assert decided == T0
    assert dead == {1: T0, 2: None}


async def test_find_dead_letters_tells_stored_and_published_positions(ledger: Ledger) -> None:
    """Stored positions map to whether they were published; unknown ones are absent."""
    await ledger.record([], [dead_letter(1), dead_letter(2), dead_letter(3, source_partition=4)])
    await ledger.mark_published([], [("events.order", 1, 2)], at=T0)

    stored = [("events.order", 1, 1), ("events.order", 1, 2), ("events.order", 4, 3)]
    found = await ledger.find_dead_letters([*stored, ("events.order", 1, 9), ("other", 1, 1)])
    assert found == {
        ("events.order", 1, 1): False,
        ("events.order", 1, 2): True,
        ("events.order", 4, 3): False,
    }


async def test_datetimes_come_back_timezone_aware_in_utc(ledger: Ledger) -> None:
    """A datetime stored with any offset is read back as the same instant, tz-aware UTC."""
    plus_two = timezone(timedelta(hours=2))
    occurred = datetime(2025, 6, 1, 14, 30, 15, 123456, tzinfo=plus_two)
    await ledger.record(
        [decision("tz", occurred_at=occurred)], [dead_letter(3, created_at=occurred)]
    )

    record = (await ledger.find_decisions(["tz"]))["tz"].record
    (dead,) = await ledger.dead_letters()
    for value in (record.occurred_at, record.decided_at, dead.created_at):
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)
    assert record.occurred_at == occurred
    assert record.occurred_at.hour == 12


async def test_naive_datetime_is_refused(ledger: Ledger) -> None:
    """A naive datetime is rejected instead of being stored in an unknown zone."""
    with pytest.raises(ValueError, match="occurred_at of decision naive is a naive datetime"):
        await ledger.record([decision("naive", occurred_at=datetime(2025, 1, 1))], [])
    assert await ledger.count_decisions() == 0


async def test_find_decisions_handles_more_ids_than_one_in_list(ledger: Ledger) -> None:
    """Large batches are inserted in one call and looked up across IN-list chunks."""
    batch = [decision(f"big-{i:05d}", source_offset=i) for i in range(1200)]
    outcome = await ledger.record(batch, [])

    assert len(outcome.inserted_event_ids) == 1200
    found = await ledger.find_decisions([d.event_id for d in batch])
    assert len(found) == 1200


async def test_summaries_count_by_type_and_outcome(ledger: Ledger) -> None:
    """Counts, grouped counts, newest-first dead letters and latency percentiles."""
    await ledger.record(
        [
            decision("s1", latency_ms=1.0),
            decision("s2", latency_ms=2.0, decision="decline"),
            decision("s3", latency_ms=3.0, event_type="ticket", decision="route"),
            decision("s4", latency_ms=4.0),
            decision("s5", latency_ms=5.0),
        ],
        [dead_letter(1), dead_letter(2, reason="validation"), dead_letter(3)],
    )

    assert await ledger.count_decisions() == 5
    assert await ledger.count_dead_letters() == 3
    assert await ledger.decision_counts() == {
        ("order", "approve"): 3,
        ("order", "decline"): 1,
        ("ticket", "route"): 1,
    }
    assert await ledger.dead_letter_counts() == {
        ("order", "malformed_json"): 2,
        ("order", "validation"): 1,
    }
    assert [d.source_offset for d in await ledger.dead_letters(limit=2)] == [3, 2]
    got = await ledger.latency_percentiles((0.0, 0.5, 0.9, 1.0))
    assert got == pytest.approx({0.0: 1.0, 0.5: 3.0, 0.9: 4.6, 1.0: 5.0})


async def test_summaries_of_an_empty_ledger(ledger: Ledger) -> None:
    """An empty ledger counts zero and has no latency percentiles."""
    assert await ledger.count_decisions() == 0
    assert await ledger.decision_counts() == {}
    assert await ledger.latency_percentiles() == {}
    assert await ledger.dead_letters() == []


# --- failures become TransientError ---------------------------------------------------


async def test_record_against_an_unreachable_database_is_transient() -> None:
    """A write that cannot reach the database raises TransientError, without the password."""
    eng = create_engine("postgresql+asyncpg://postgres:s3cret-pw@127.0.0.1:1/x")
    try:
        with pytest.raises(TransientError, match="store the batch") as info:
            await Ledger(eng).record([decision("t")], [])
    finally:
        await eng.dispose()
    assert "s3cret" not in str(info.value)


@pytest.mark.sqlite
async def test_record_on_a_locked_sqlite_file_is_transient(tmp_path: Path) -> None:
    """ "database is locked" past the busy timeout becomes TransientError (retry later)."""
    path = tmp_path / "locked.db"
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade(url)
    eng = create_engine(url)

    # Registered after create_engine's listener, so it overrides the 5 s busy timeout.
    @event.listens_for(eng.sync_engine, "connect")
    def short_timeout(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=50")
        cursor.close()

    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(TransientError, match="database is locked"):
            await Ledger(eng).record([decision("l")], [])
        holder.execute("ROLLBACK")
        assert (await Ledger(eng).record([decision("l")], [])).inserted_event_ids == {"l"}
    finally:
        holder.close()
        await eng.dispose()


# --- pure helpers -------------------------------------------------------------------


def test_decision_rows_keep_the_first_occurrence_sorted_by_event_id() -> None:
    """Rows are deduplicated by event_id and sorted, for a stable lock order."""
    rows = decision_rows([decision("b"), decision("a"), decision("b", decision="decline")])

    assert [(r["event_id"], r["decision"]) for r in rows] == [("a", "approve"), ("b", "approve")]


def test_percentiles_interpolate_linearly() -> None:
    """Percentiles match PostgreSQL's percentile_cont on the same values."""
    assert percentiles([10.0, 20.0, 30.0, 40.0], [0.5, 0.25, 1.0]) == {
        0.5: 25.0,
        0.25: 17.5,
        1.0: 40.0,
    }
    assert percentiles([40.0, 10.0, 30.0, 20.0], [0.5]) == {0.5: 25.0}
    assert percentiles([], [0.5]) == {}


async def test_decided_events_pages_oldest_first_from_since_without_repeats(
    ledger: Ledger,
) -> None:
    """Replays read every decided event at or after `since`, in event-time order, in pages,
    each once — even when many share one occurred_at."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    records = [
        decision(f"evt-{i:03d}", occurred_at=base + timedelta(seconds=i // 3)) for i in range(30)
    ]
    await ledger.record(records, [])
    since = base + timedelta(seconds=2)
    pages = [page async for page in ledger.decided_events(since, page=4)]
    ids = [e.payload["event_id"] for page in pages for e in page]
    assert sorted(ids) == [f"evt-{i:03d}" for i in range(6, 30)]
    times = [e.occurred_at for page in pages for e in page]
    assert times == sorted(times)
    assert min(times) == since
    assert all(len(page) <= 4 for page in pages)
    assert await ledger.latest_occurred_at() == base + timedelta(seconds=9)
