"""Scale-out proven here: several ``arbiter run`` processes in one consumer group, on a real
broker with partitioned topics and one PostgreSQL ledger, while members join, leave
(SIGTERM) and crash (SIGKILL) mid-stream.

DESIGN.md's promises checked from the outside, over every event of the run:

- exactly one decision per valid event in the ledger, none missing, and exactly the
  malformed events dead-lettered;
- on ``decisions.<type>`` every decision at least once, a second copy only as the same
  decision re-published (at-least-once out, never a second, different decision);
- per partition key, decisions stored (ledger identity order) and first published
  (offsets on ``decisions.<type>``, where one key is one partition) in produce order;
- two processes split the partitions between them (and their throughput beside one
  process's is measured and reported).

The second test pins down the per-key order bug the first one found (a new owner
re-published a crashed member's stored decisions after later ones; fixed in
``BatchProcessor``: a batch publishes what it owes in the order its events came in).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy.ext.asyncio import AsyncEngine

from app.inference.scoring import Scorer
from app.pipeline.processor import BatchProcessor
from app.processes.simulate import emit
from app.settings import Settings
from app.simulator.generate import SimEvent, generate
from app.store import create_engine, migrate
from app.store.ledger import Ledger
from app.values import InRecord, OutMessage
from app.wiring import event_types, load_rules_engine
from connectors.broker import EmbeddedBroker
from tests.harness import ArbiterProcess, header, read_topics, wait_until

TYPES = ("order", "ticket", "transaction")
PARTITIONS = 6
MEASURED = 5_000  # events per throughput phase (1 process, then 2)
STREAM = 20_000  # events of the churn phase (3 processes, stopped, killed, replaced)
STREAM_RATE = 500.0  # events/s: the stream (40 s) outlasts a process start: churn mid-stream
WARMUP = 300


def _topic(kind: str, event_type: str) -> str:
    return f"{kind}.{event_type}"


async def _create_topics(bootstrap: str) -> None:
    """Every topic of the run, explicitly partitioned (nothing relies on auto-creation)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(_topic(kind, t), num_partitions=PARTITIONS, replication_factor=1)
                for t in TYPES
                for kind in ("events", "decisions", "outcomes", "dlq")
            ]
        )
    finally:
        await admin.close()


@dataclass
class Run:
    """Everything produced, in produce order, and what the run measured."""

    bootstrap: str
    engine: AsyncEngine
    produced: list[SimEvent] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> list[SimEvent]:
        return [e for e in self.produced if e.malformed is None]

    @property
    def malformed(self) -> list[SimEvent]:
        return [e for e in self.produced if e.malformed is not None]

    async def produce(self, events: Sequence[SimEvent], **kwargs: Any) -> None:
        ids = {e.event_id for e in self.produced if e.event_id}
        repeated = [e.event_id for e in events if e.event_id in ids]
        assert not repeated, f"a seed used twice: {repeated[:3]} were produced before"
        self.produced.extend(events)
        await emit(self.bootstrap, events, topic_for=lambda t: _topic("events", t), **kwargs)

    async def scalar(self, sql: str) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.text(sql))).scalar_one()

    async def published(self) -> int:
        return int(
            await self.scalar("SELECT count(*) FROM decisions WHERE published_at IS NOT NULL")
        )

    async def wait_published(self, n: int, timeout: float = 120.0) -> None:
        async def done() -> bool:
            return await self.published() >= n

        await wait_until(done, timeout=timeout, interval=0.05)


def _decided(proc: ArbiterProcess) -> int:
    return sum(e.get("decided", 0) for e in proc.log_lines() if e.get("event") == "batch")


def _events(n: int, seed: int, malformed_rate: float = 0.0) -> list[SimEvent]:
    return list(generate(n, seed=seed, malformed_rate=malformed_rate))


async def _warm_up(run: Run, procs: Sequence[ArbiterProcess], seed: int) -> int:
    """Produce small rounds until every process decided some of them: the group has
    settled with partitions on every member, and each has scored its first batch."""
    before = [_decided(p) for p in procs]
    for round_ in range(1, 11):
        await run.produce(_events(WARMUP, seed=seed + round_))
        await run.wait_published(len(run.valid))
        await asyncio.sleep(0.5)  # the batch log lines are written after the publish
        if all(_decided(p) > b for p, b in zip(procs, before, strict=True)):
            return round_
    raise AssertionError("10 warm-up rounds and some member still decided nothing")


async def _throughput(run: Run, procs: Sequence[ArbiterProcess], seed: int) -> dict[str, Any]:
    """Produce ``MEASURED`` events as fast as the producer goes; decisions/s from the first
    send to the last ``published_at`` (decided, stored and published), and each member's
    share from its batch log lines."""
    rounds = await _warm_up(run, procs, seed * 100)
    before = [_decided(p) for p in procs]
    events = _events(MEASURED, seed=seed)
    started = datetime.now(UTC)
    await run.produce(events)
    await run.wait_published(len(run.valid))
    last = await run.scalar("SELECT max(published_at) FROM decisions")
    seconds = (last - started).total_seconds()

    def counted() -> bool:  # a batch's log line follows its offset commit
        return sum(_decided(p) - b for p, b in zip(procs, before, strict=True)) >= len(events)

    await wait_until(counted, timeout=30)
    return {
        "processes": len(procs),
        "events": len(events),
        "seconds": round(seconds, 3),
        "decisions_per_s": round(len(events) / seconds, 1),
        "per_process": [_decided(p) - b for p, b in zip(procs, before, strict=True)],
        "warmup_rounds": rounds,
    }


async def _start(procs: Sequence[ArbiterProcess], timeout: float = 180.0) -> float:
    started = time.monotonic()
    for proc in procs:
        proc.start()
    for proc in procs:
        await proc.wait_for_log("consuming", timeout=timeout)
    return round(time.monotonic() - started, 1)


async def _wait_unpublished(run: Run, timeout: float, batch: int = 250) -> int:
    """Poll the ledger until it holds at least ``batch`` decisions stored but not yet
    published (a big batch: its publish takes longest); how many there were at the end
    (maybe fewer, after ``timeout``). Tight and cheap (asyncpg, only rows newer than the
    start, by primary key), so the kill that follows lands inside the store → publish
    window."""
    dsn = run.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    found = 0
    try:
        newest = await conn.fetchval("SELECT coalesce(max(id), 0) FROM decisions")
        look = await conn.prepare(
            "SELECT count(*) FROM decisions WHERE id > $1 AND published_at IS NULL"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = int(await look.fetchval(newest))
            if found >= batch:
                break
    finally:
        await conn.close()
    return found


async def _starve(pid: int, stop: asyncio.Event, run_s: float = 0.002) -> None:
    """Let ``pid`` run ``run_s`` of every ~10 ms (SIGSTOP/SIGCONT) until ``stop``: a
    member starved of CPU, so each step of its batch takes ~5x longer and a kill aimed
    at one of them lands in it."""
    try:
        while not stop.is_set():
            os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(0.01 - run_s)
            os.kill(pid, signal.SIGCONT)
            await asyncio.sleep(run_s)
    except ProcessLookupError:
        return
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


async def _churn(
    run: Run, p1: ArbiterProcess, p2: ArbiterProcess, p3: ArbiterProcess, p4: ArbiterProcess
) -> dict[str, Any]:
    """The 20,000-event stream (1 % malformed) at ``STREAM_RATE`` through the three members
    p1, p2, p3 while the group changes under load:

    - 4,000 out: p1 is stopped (SIGTERM: it finishes its batch, commits, leaves);
    - 7,000 out: p3 is killed (SIGKILL at a random moment: no commit, no leave; its
      partitions move to p2 after the session timeout);
    - 10,000 out: 3,000 more go out unpaced (a backlog), and p2 — now the only live
      member, starved of CPU from here on so that its steps take longer — is killed at
      the first moment the ledger holds a big batch of its decisions stored but not yet
      published: the crash lands between "store" and "publish", where redelivery must
      re-publish instead of deciding again;
    - then p4 starts and p1 starts again; they take over every partition, redeliveries
      included, while the rest of the stream comes in.

    Afterwards small rounds go on until p1 and p4 have both decided some."""
    events = _events(STREAM, seed=43, malformed_rate=0.01)
    sent = 0
    timeline: list[tuple[float, str]] = []
    t0 = time.monotonic()

    def note(what: str) -> None:
        at = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
        timeline.append((round(time.monotonic() - t0, 1), f"{at} {what} (produced {sent:,})"))

    def on_sent(n: int) -> None:
        nonlocal sent
        sent += n

    async def stream() -> None:
        await run.produce(events[:10_000], rate=STREAM_RATE, on_sent=on_sent)
        await run.produce(events[10_000:13_000], on_sent=on_sent)
        note("backlog of 3,000 produced")
        await run.produce(events[13_000:], rate=STREAM_RATE, on_sent=on_sent)

    producing = asyncio.create_task(stream())
    note("stream started")
    await wait_until(lambda: sent >= 4_000, timeout=120)
    code = await asyncio.to_thread(p1.terminate)
    note(f"p1 stopped by SIGTERM, exit code {code}")
    assert code == 0, p1.log_path.read_text()[-3000:]
    await wait_until(lambda: sent >= 7_000, timeout=120)
    p3.kill()
    note("p3 killed by SIGKILL")
    await wait_until(lambda: sent >= 13_000, timeout=120, interval=0.01)
    assert not producing.done()
    # Only p2 lives now: any decision stored from here on and not yet published is its.
    assert p2.proc is not None
    starved = asyncio.Event()
    starving = asyncio.create_task(_starve(p2.proc.pid, starved))
    try:
        unpublished = await _wait_unpublished(run, timeout=20.0)
        p2.kill()
    finally:
        starved.set()
        await starving
    note(f"p2 killed by SIGKILL with {unpublished} decision(s) stored, not yet published")
    p4.start()
    p1.start()
    note("p4 started, p1 started again")
    await producing
    note("stream produced")
    for proc, after in ((p4, 0), (p1, 1)):
        await proc.wait_for_log("consuming", timeout=180, after=after)
        line = [e for e in proc.log_lines() if e.get("event") == "consuming"][after]
        note(f"{proc.log_path.stem} consuming since {line['timestamp'][11:23]}")
    await run.wait_published(len(run.valid), timeout=180)
    note("every valid event decided and published")
    decided_in_stream = {p.log_path.stem: _decided(p) for p in (p1, p2, p3, p4)}
    rounds = await _warm_up(run, [p1, p4], seed=6000)
    note(f"p1 and p4 both decided in {rounds} round(s) of {WARMUP} more events")
    return {
        "events": len(events),
        "malformed": sum(1 for e in events if e.malformed),
        "timeline": timeline,
        "decided_by_end_of_stream": decided_in_stream,
        "decided_by": {p.log_path.stem: _decided(p) for p in (p1, p2, p3, p4)},
    }


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_three_processes_in_one_group_keep_every_guarantee_through_stops_and_crashes(
    broker: EmbeddedBroker, pg_url: str, trained_models: Path, tmp_path: Path
) -> None:
    """1 → 2 → 3 ``arbiter run`` members on 6-partition topics and one PostgreSQL ledger;
    a 20,000-event stream survives a SIGTERM, two SIGKILLs (one between store and
    publish) and two starts: one ledger decision per valid event, only the malformed
    dead-lettered, topic copies identical, per-key order kept, and 2 members split the
    work (throughput reported)."""
    await migrate.upgrade(pg_url)
    await _create_topics(broker.bootstrap)
    env = {
        "ARBITER_KAFKA_BOOTSTRAP": broker.bootstrap,
        "ARBITER_DATABASE_URL": pg_url,
        "ARBITER_MODELS_DIR": str(trained_models),
        "ARBITER_TRAINER_ENABLED": "false",
        "ARBITER_KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        "ARBITER_BATCH_WAIT_MS": "20",
    }

    def member(name: str) -> ArbiterProcess:
        return ArbiterProcess(
            tmp_path / f"{name}.log", {**env, "ARBITER_DATA_DIR": str(tmp_path / name)}
        )

    procs = {name: member(name) for name in ("p1", "p2", "p3", "p4")}
    engine = create_engine(pg_url)
    run = Run(broker.bootstrap, engine)
    t_start = time.monotonic()
    try:
        run.report["startup_s"] = {"p1": await _start([procs["p1"]])}
        one = await _throughput(run, [procs["p1"]], seed=41)
        run.report["startup_s"]["p2"] = await _start([procs["p2"]])
        two = await _throughput(run, [procs["p1"], procs["p2"]], seed=42)
        run.report["throughput"] = [one, two]
        # (d) Throughput: reported, asserted only as "the partitions were split". One member
        # uses at most ~0.85 of a core, so a second one helps only while a core is free; here
        # the broker, PostgreSQL, this test and the members share 2 cores with other jobs.
        # Measured 2 / 1 ratios: 0.94x-1.74x over twelve runs of this test (2 < 1 once),
        # 0.94x-1.87x in bench/scale_out.py (see bench/RESULTS.md). "2 > 1" would fail on a
        # busy box for no fault of Arbiter's; both members taking a share of the
        # partitions (range assignment: 3 of 6 each) must hold anywhere.
        ratio = two["decisions_per_s"] / one["decisions_per_s"]
        figures = (
            f"1 process {one['decisions_per_s']:,.0f} decisions/s, 2 processes "
            f"{two['decisions_per_s']:,.0f} decisions/s ({ratio:.2f}x); 2-process split "
            f"{two['per_process']}"
        )
        print(figures)
        assert one["per_process"] == [MEASURED], figures
        assert sum(two["per_process"]) == MEASURED, figures
        assert min(two["per_process"]) >= MEASURED // 5, f"one member idled: {figures}"
        run.report["startup_s"]["p3"] = await _start([procs["p3"]])
        members = [procs["p1"], procs["p2"], procs["p3"]]
        run.report["three_member_warmup_rounds"] = await _warm_up(run, members, seed=5000)
        run.report["churn"] = await _churn(run, *procs.values())
        await _check(run, procs)
        for name in ("p1", "p4"):
            assert procs[name].terminate() == 0
    finally:
        for proc in procs.values():
            proc.ensure_stopped()
        await engine.dispose()
        run.report["total_s"] = round(time.monotonic() - t_start, 1)
        out = tmp_path / "scale_out_report.json"
        out.write_text(json.dumps(run.report, indent=2, default=str))
        print(f"\nscale-out report ({out}):\n{json.dumps(run.report, indent=2, default=str)}")


def _log_stats(procs: dict[str, ArbiterProcess]) -> dict[str, int]:
    """What the members' logs say about redelivery, from every process of the run."""
    lines = [e for p in procs.values() for e in p.log_lines()]
    batches = [e for e in lines if e.get("event") == "batch"]
    return {
        "redelivered_in_batches": sum(e.get("redelivered", 0) for e in batches),
        "republished_from_ledger_in_batches": sum(e.get("republished", 0) for e in batches),
        "published_late_by_sweeper": sum(
            e.get("decisions", 0)
            for e in lines
            if e.get("event") == "stored decisions published late"
        ),
        "commits_refused_after_rebalance": sum(
            1 for e in lines if str(e.get("event", "")).startswith("commit refused")
        ),
    }


async def _check(run: Run, procs: dict[str, ArbiterProcess]) -> None:
    """(a) ledger and dead letters, (b) topic copies, (c) per-key order. The figures go
    into the report before each group of assertions, so a failure still shows them."""
    valid, bad = run.valid, run.malformed
    checks: dict[str, Any] = run.report.setdefault("checks", {})
    checks.update(_log_stats(procs))
    produce_index = {e.event_id: i for i, e in enumerate(valid)}
    assert len(produce_index) == len(valid), "the simulator repeated an event id"

    # (a) exactly one ledger row per valid event, none missing, nothing else
    async with run.engine.connect() as conn:
        query = sa.text(
            "SELECT id, event_id, event_type, partition_key, decision, decided_at, "
            "published_at, source_partition, source_offset FROM decisions"
        )
        rows = (await conn.execute(query)).mappings().all()
        query = sa.text("SELECT reason, raw, published_at FROM dead_letters")
        letters = (await conn.execute(query)).mappings().all()
    per_id = Counter(r["event_id"] for r in rows)
    doubled = [i for i, n in per_id.items() if n > 1]
    missing = sorted(set(produce_index) - set(per_id))
    unexpected = sorted(set(per_id) - set(produce_index))
    checks.update(
        valid_events=len(valid),
        malformed_events=len(bad),
        ledger_decisions=len(rows),
        dead_letters=len(letters),
    )
    assert not doubled, f"decided twice: {doubled[:20]}"
    assert not missing, f"{len(missing)} valid events never decided: {missing[:20]}"
    assert not unexpected, f"decisions for events never produced: {unexpected[:20]}"
    assert all(r["published_at"] is not None for r in rows)
    assert Counter(bytes(d["raw"]) for d in letters) == Counter(e.value for e in bad)
    assert Counter(d["reason"] for d in letters) == Counter(e.malformed for e in bad)
    assert all(d["published_at"] is not None for d in letters)
    stored = {r["event_id"]: r for r in rows}

    # (b) the topics: every decision at least once; a copy only ever the same decision
    topics = [_topic("decisions", t) for t in TYPES] + [_topic("dlq", t) for t in TYPES]
    got = await read_topics(run.bootstrap, topics, until=len(valid) + len(bad), timeout=120)
    copies: dict[str, list[Any]] = defaultdict(list)
    for t in TYPES:
        for record in got[_topic("decisions", t)]:
            body = json.loads(record.value)
            copies[body["event_id"]].append((record, body))
    published = sum(len(found) for found in copies.values())
    dead = [r for t in TYPES for r in got[_topic("dlq", t)]]
    checks.update(
        decision_records_on_topics=published,
        duplicate_copies=published - len(copies),
        events_with_a_duplicate=sum(1 for found in copies.values() if len(found) > 1),
        copies_equal_as_json_not_bytes=sum(
            1 for found in copies.values() if len({r.value for r, _ in found}) > 1
        ),
        dlq_records=len(dead),
    )
    assert set(copies) == set(produce_index), "a decision never reached its topic"
    different = [
        event_id for event_id, found in copies.items() if any(b != found[0][1] for _, b in found)
    ]
    assert not different, f"one event, different published decisions: {different[:5]}"
    for event_id, found in copies.items():
        body = found[0][1]
        assert body["decision"] == stored[event_id]["decision"], event_id
        assert datetime.fromisoformat(body["decided_at"]) == stored[event_id]["decided_at"]
    assert {r.value for r in dead} == {e.value for e in bad}
    assert {header(r, "arbiter.reason") for r in dead} <= {e.malformed for e in bad}

    # (c) per-key order. Input order is the produce order (checked against the ledger's
    # source offsets: one key, one partition of events.<type>). Evidence on the way out:
    # the ledger identity (assigned at insert: "stored before") and, on decisions.<type>,
    # the offset of each decision's first copy (one key, one partition: "published
    # before"). A later re-publish of an earlier decision is a duplicate, not a reorder.
    by_key: dict[tuple[str, str], list[str]] = defaultdict(list)
    for e in valid:
        by_key[(e.event_type, e.key.decode())].append(e.event_id or "")
    first = {
        event_id: min((r.partition, r.offset) for r, _ in found)
        for event_id, found in copies.items()
    }
    sent_at = {  # the first copy's CreateTime, as evidence of which path published it
        event_id: datetime.fromtimestamp(
            min((r.partition, r.offset, r.timestamp) for r, _ in found)[2] / 1000, UTC
        ).strftime("%H:%M:%S.%f")[:-3]
        for event_id, found in copies.items()
    }
    problems: list[str] = []
    for (event_type, key), ids in by_key.items():
        rows_in_order = [stored[i] for i in ids]
        if len({r["source_partition"] for r in rows_in_order}) != 1:
            problems.append(f"{event_type}/{key}: events on several partitions")
        offsets = [r["source_offset"] for r in rows_in_order]
        if offsets != sorted(offsets):
            problems.append(f"{event_type}/{key}: produced out of order {ids}")
        identities = [r["id"] for r in rows_in_order]
        if identities != sorted(identities):
            problems.append(f"{event_type}/{key}: stored out of order {ids} ids {identities}")
        out = [first[i] for i in ids]
        if len({p for p, _ in out}) != 1:
            problems.append(f"{event_type}/{key}: decisions on several partitions {out}")
        elif out != sorted(out):
            swapped = [
                f"{ids[n]} at {out[n]} sent {sent_at[ids[n]]} after {ids[n + 1]} at "
                f"{out[n + 1]} sent {sent_at[ids[n + 1]]}"
                for n in range(len(out) - 1)
                if out[n] > out[n + 1]
            ]
            problems.append(f"{event_type}/{key}: first published out of order: {swapped}")
    checks.update(keys_checked_for_order=len(by_key), order_problems=problems[:50])
    assert not problems, f"{len(problems)} keys out of order: {problems[:10]}"


@pytest.mark.sqlite
async def test_a_new_owner_publishes_a_crashed_members_stored_decision_before_later_ones(
    tmp_path: Path,
) -> None:
    """Member A stores the decision of a key's first event and dies before publishing it
    (its offset uncommitted); member B, the partition's new owner, reads that event and
    the key's next one in one batch: decisions.<type> must carry the first decision
    before the second, as the scale-out test requires of every key."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await migrate.upgrade(url)
    engine = create_engine(url)
    settings = Settings()
    events = _events(3000, seed=5)
    by_key: dict[tuple[str, bytes], list[SimEvent]] = defaultdict(list)
    for e in events:
        by_key[(e.event_type, e.key)].append(e)
    earlier, later = next(found for found in by_key.values() if len(found) >= 2)[:2]
    records = [
        InRecord(e.event_type, _topic("events", e.event_type), 0, offset, e.key, e.value, 0)
        for offset, e in enumerate((earlier, later))
    ]
    sent: list[OutMessage] = []

    async def killed(_messages: Sequence[OutMessage]) -> None:
        raise ConnectionError("member A was killed between store and publish")

    async def publish(messages: Sequence[OutMessage]) -> None:
        sent.extend(messages)

    def member(publish: Any) -> BatchProcessor:
        return BatchProcessor(
            ledger=Ledger(engine),
            scorer=Scorer({}),
            rules=load_rules_engine(settings),
            publish=publish,
            topic_for=settings.topic,  # type: ignore[arg-type]
            max_event_bytes=settings.max_event_bytes,
            types=event_types(settings),
        )

    a, b = member(killed), member(publish)
    try:
        with pytest.raises(ConnectionError):
            await a.process(records[:1])
        result = await b.process(records)
    finally:
        a.close()
        b.close()
        await engine.dispose()
    assert result.republished == 1
    out = [json.loads(m.value)["event_id"] for m in sent if m.topic.startswith("decisions.")]
    assert out == [earlier.event_id, later.event_id]
