"""End-to-end throughput: Arbiter beside a naive per-message consumer and a raw passthrough.

Each scenario gets its own freshly started embedded Tansu broker (its memory storage
never frees), a topic set pre-filled with the same simulator stream (2 % malformed), and
a clock that starts when its consumer starts and stops when every event is decided or
dead-lettered:

1. ``arbiter``      the real pipeline in-process (``start_components`` + ``ConsumeLoop``).
2. ``naive``        what a first implementation typically does: a FastStream per-message
                    subscriber that decodes, scores ONE row, posts ONE fact to the rules,
                    commits ONE ORM row and awaits ONE publish per event.
3. ``passthrough``  aiokafka getmany → producer → commit, no processing: the ceiling of
                    the broker on this machine.

    .venv/bin/python bench/e2e.py [--events 20000] [--naive-events 6000] [--only arbiter]

Prints a table with the ratios and appends a dated section to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import SHIPPED_TYPES, git_commit, shipped_catalog
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy import DateTime, Float, String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.inference.loading import scorer_from_folder
from app.processes.simulate import emit
from app.simulator.generate import generate
from app.trainer.jobs.first import train_missing
from app.values import OutMessage
from connectors.broker import EmbeddedBroker
from connectors.kafka.client import ensure_topics, make_consumer, make_producer, publish_all

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
SCENARIOS = ("arbiter", "naive", "passthrough")
PARTITIONS = 4  # Settings.topic_partitions default: every scenario reads the same layout
MAX_EVENT_BYTES = 64 * 1024
# A new group's join costs about half the session timeout on Tansu (docs/dependencies.md,
# Kafka): keep it
# short and the same for every scenario so the join does not dominate a short run.
SESSION_TIMEOUT_MS = 2_000
HEARTBEAT_MS = 300
# Settings overrides shared by both scenarios that load rules (``--rules-dir``).
SETTINGS_EXTRA: dict[str, Any] = {}

RESULTS_HEADER = """\
# End-to-end benchmark results

Appended by `bench/e2e.py` (see `bench/README.md`). Each run measures three figures on
the same machine, the same broker build and the same pre-filled simulator stream
(2 % malformed), each on its own freshly started embedded Tansu broker. The clock runs
from the consumer's start (group join included) until every event is decided or
dead-lettered; "after join" is the same count over the time after the first result.
The baseline is beside every figure:

- **arbiter**: the real pipeline in-process (batch decode, one `predict_proba` per model
  per batch, one rules pass per batch, one ledger transaction, pipelined publish,
  offsets committed per partition). Latency = per-event processing latency (batch
  received → decided).
- **naive**: the baseline, what a first implementation typically is: a FastStream 0.7.8
  per-message subscriber (`AckPolicy.NACK_ON_ERROR`: one offset commit per message)
  that decodes, scores one row, posts one fact to durable_rules, commits one SQLAlchemy
  ORM row (same SQLite pragmas as the ledger) and awaits one publish, per event.
  Latency = handler time per event.
- **passthrough**: aiokafka `getmany` → producer → commit per batch, no processing:
  the ceiling of the broker on this machine.

queue+process = produce time → decision stored/published. On a pre-filled topic it is
mostly time spent waiting in the topic (and grows with N), so it is not a latency
figure. Ratios are events/s over events/s; the naive run uses a smaller N (its N is
given) and is compared as events/s.
"""


# --- results --------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    events: int
    seconds: float | None = None  # consumer start → last event decided/dead-lettered
    first_s: float | None = None  # consumer start → first result (mostly the group join)
    first_count: int = 0  # events done by that first result
    decided: int = 0
    dead: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    produce_rate: float | None = None
    error: str | None = None
    # naive only: time per step of the handler, to show where a per-event design spends it
    steps_ms: dict[str, list[float]] = field(default_factory=dict)

    def step(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.steps_ms.setdefault(name, []).append((now - since) * 1000.0)
        return now

    @property
    def rate(self) -> float | None:
        if self.error or not self.seconds:
            return None
        return (self.decided + self.dead) / self.seconds

    @property
    def steady_rate(self) -> float | None:
        """Events/s after the first result: the processing rate without the group join."""
        if self.error or not self.seconds or self.first_s is None:
            return None
        span = self.seconds - self.first_s
        return (self.decided + self.dead - self.first_count) / span if span > 0 else None

    def progress(self, elapsed: float) -> bool:
        """Note a result ``elapsed`` s after the start; True once every event is done."""
        finished = self.decided + self.dead
        if self.first_s is None:
            self.first_s, self.first_count = elapsed, finished
        if finished >= self.events:
            self.seconds = elapsed
            return True
        return False


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "—" if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}x"


# --- shared steps ---------------------------------------------------------------------


def all_topics() -> list[str]:
    kinds = ("events", "decisions", "outcomes", "dlq")
    return [f"{k}.{t}" for t in SHIPPED_TYPES for k in kinds]


async def prefill(bootstrap: str, n: int, seed: int) -> float:
    """Create the topic set and produce ``n`` simulator events; return the produce rate."""
    await ensure_topics(bootstrap, all_topics(), PARTITIONS)
    events = list(generate(n, seed=seed, malformed_rate=0.02))
    started = time.perf_counter()
    sent = await emit(bootstrap, events, topic_for=lambda t: f"events.{t}")
    elapsed = time.perf_counter() - started
    if sent != n:
        raise RuntimeError(f"pre-fill sent {sent} of {n} events")
    return n / elapsed if elapsed > 0 else 0.0


async def wait_done(done: asyncio.Event, task: asyncio.Task[Any], limit_s: float) -> None:
    """Wait for ``done``; fail at once if the consumer task dies, or after ``limit_s``."""
    waiter = asyncio.create_task(done.wait())
    try:
        finished, _ = await asyncio.wait(
            {waiter, task}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        waiter.cancel()
    if waiter in finished or done.is_set():
        return
    if task in finished:
        exc = task.exception()
        raise RuntimeError(f"consumer stopped before the end: {exc!r}") from exc
    raise TimeoutError(f"not finished after {limit_s:.0f}s")


# --- 1. Arbiter -----------------------------------------------------------------------


async def run_arbiter(fig: Figure, bootstrap: str, work: Path, models_dir: Path, limit_s: float):
    from app.settings import Settings
    from app.values import BatchResult
    from app.wiring import consume_loop, start_components

    settings = Settings(
        kafka_bootstrap=bootstrap,
        database_url=f"sqlite+aiosqlite:///{work / 'arbiter.db'}",
        data_dir=work,
        models_dir=models_dir,
        auto_migrate=True,
        consumer_group="bench-arbiter",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
        topic_partitions=PARTITIONS,
        **SETTINGS_EXTRA,
    )
    done = asyncio.Event()
    started = 0.0

    def on_batch(result: BatchResult) -> None:
        fig.decided += sum(result.decided.values())
        fig.dead += sum(result.dead_lettered.values())
        fig.latencies_ms.extend(result.latencies_ms)
        fig.e2e_ms.extend(result.e2e_ms)
        if fig.progress(time.perf_counter() - started):
            done.set()

    async with start_components(settings, on_progress=lambda _msg: None) as components:
        loop = consume_loop(components, listeners=[on_batch])
        started = time.perf_counter()
        task = asyncio.create_task(loop.run())
        try:
            await wait_done(done, task, limit_s)
        finally:
            loop.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)


# --- 2. Naive baseline ----------------------------------------------------------------


class NaiveBase(DeclarativeBase):
    pass


class NaiveDecision(NaiveBase):
    """The baseline's decision log: a typical ORM model with an autoincrement key."""

    __tablename__ = "naive_decisions"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    event_type: Mapped[str] = mapped_column(String(32))
    decision: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str | None] = mapped_column(String(128))
    score: Mapped[float | None] = mapped_column(Float)
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class NaiveHandler:
    """The per-message handler: decode, score, rules, store, publish, once per event."""

    def __init__(
        self,
        fig: Figure,
        broker: KafkaBroker,
        scorer: Any,
        rules: Any,
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        self.fig = fig
        self.broker = broker
        self.scorer = scorer
        self.rules = rules
        self.sessions = sessions
        self.done = asyncio.Event()
        self.started = 0.0

    def _finished(self, t0: float) -> None:
        fig = self.fig
        now = time.perf_counter()
        fig.latencies_ms.append((now - t0) * 1000.0)
        if fig.progress(now - self.started):
            self.done.set()

    async def handle(self, msg: KafkaMessage) -> None:
        from app.core.decode import decode_event
        from app.core.stages import rule_facts
        from app.errors import InvalidEvent

        t0 = time.perf_counter()
        record = msg.raw_message
        event_type = record.topic.split(".", 1)[1]
        try:
            event = decode_event(event_type, msg.body, max_bytes=MAX_EVENT_BYTES)
            t = self.fig.step("decode", t0)
        except InvalidEvent as exc:
            await self.broker.publish(
                msg.body, f"dlq.{event_type}", key=record.key, headers={"reason": exc.reason}
            )
            self.fig.dead += 1
            self._finished(t0)
            return
        scores = self.scorer.score(event_type, [event])[0]
        t = self.fig.step("score", t)
        fact = rule_facts(event.model_dump(mode="json"), scores)
        outcome = self.rules.evaluate(event_type, [fact])[0]
        t = self.fig.step("rules", t)
        decided_at = dt.datetime.now(dt.UTC)
        numeric = [v for v in scores.values() if isinstance(v, float)]
        async with self.sessions() as session:
            session.add(
                NaiveDecision(
                    event_id=event.event_id,
                    event_type=event_type,
                    decision=outcome.decision,
                    rule=outcome.rule,
                    score=numeric[0] if numeric else None,
                    decided_at=decided_at,
                )
            )
            await session.commit()
        t = self.fig.step("store", t)
        await self.broker.publish(
            {
                "event_id": event.event_id,
                "event_type": event_type,
                "decision": outcome.decision,
                "scores": scores,
                "rules_fired": [outcome.rule] if outcome.rule else [],
                "reasons": [outcome.reason],
                "decided_at": decided_at.isoformat(),
            },
            f"decisions.{event_type}",
            key=record.key,
        )
        self.fig.step("publish", t)
        self.fig.e2e_ms.append(max(time.time() * 1000.0 - record.timestamp, 0.0))
        self.fig.decided += 1
        self._finished(t0)


async def run_naive(fig: Figure, bootstrap: str, work: Path, models_dir: Path, limit_s: float):
    from app.settings import Settings
    from app.store.db import create_engine
    from app.wiring import load_rules_engine

    scorer = scorer_from_folder(models_dir)
    rules = load_rules_engine(Settings(data_dir=work, models_dir=models_dir, **SETTINGS_EXTRA))
    # Same SQLite pragmas as Arbiter's ledger (WAL, synchronous=NORMAL): the difference
    # measured is the per-event shape, not the store configuration.
    engine = create_engine(f"sqlite+aiosqlite:///{work / 'naive.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(NaiveBase.metadata.create_all)
    # acks="all" as Arbiter's producer; logger=None spares the per-message log lines.
    broker = KafkaBroker(bootstrap, acks="all", logger=None)
    handler = NaiveHandler(
        fig, broker, scorer, rules, async_sessionmaker(engine, expire_on_commit=False)
    )
    broker.subscriber(
        *(f"events.{t}" for t in SHIPPED_TYPES),
        group_id="bench-naive",
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,  # commit after the handler; seek back on error
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
    )(handler.handle)
    try:
        handler.started = time.perf_counter()
        await broker.start()
        # FastStream runs the subscriber in its own task: only the clock is watched here.
        await wait_done(handler.done, asyncio.create_task(handler.done.wait()), limit_s)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(broker.stop(), 30)
        await engine.dispose()


# --- 3. Raw passthrough ---------------------------------------------------------------


async def run_passthrough(
    fig: Figure, bootstrap: str, _work: Path, _models_dir: Path, limit_s: float
):
    topics = [f"events.{t}" for t in SHIPPED_TYPES]
    consumer = make_consumer(
        bootstrap,
        topics,
        group_id="bench-passthrough",
        max_records=500,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
    )
    producer = make_producer(bootstrap)
    await producer.start()
    done = asyncio.Event()
    started = time.perf_counter()

    async def pump() -> None:
        await consumer.start()
        while not done.is_set():
            fetched = await consumer.getmany(timeout_ms=100, max_records=500)
            if not fetched:
                continue
            await publish_all(
                producer,
                [
                    OutMessage(tp.topic.replace("events.", "decisions.", 1), m.key, m.value or b"")
                    for tp, messages in fetched.items()
                    for m in messages
                ],
            )
            await consumer.commit({tp: ms[-1].offset + 1 for tp, ms in fetched.items()})
            now_ms = time.time() * 1000.0
            fig.e2e_ms.extend(max(now_ms - m.timestamp, 0.0) for ms in fetched.values() for m in ms)
            fig.decided += sum(len(ms) for ms in fetched.values())
            if fig.progress(time.perf_counter() - started):
                done.set()

    task = asyncio.create_task(pump())
    try:
        await wait_done(done, task, limit_s)
    finally:
        done.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await consumer.stop()
        await producer.stop()


# --- driver ---------------------------------------------------------------------------

Runner = Callable[[Figure, str, Path, Path, float], Awaitable[None]]
RUNNERS: dict[str, Runner] = {
    "arbiter": run_arbiter,
    "naive": run_naive,
    "passthrough": run_passthrough,
}


async def run_scenario(
    name: str, n: int, *, seed: int, root: Path, models_dir: Path, limit_s: float
) -> Figure:
    fig = Figure(name, n)
    work = root / name
    work.mkdir(parents=True, exist_ok=True)
    print(f"[{name}] {n:,} events: starting broker, pre-filling …", flush=True)
    try:
        with EmbeddedBroker(log_file=work / "broker.log") as broker:
            fig.produce_rate = await prefill(broker.bootstrap, n, seed)
            await RUNNERS[name](fig, broker.bootstrap, work, models_dir, limit_s)
    except Exception as exc:  # one failing scenario must not hide the others
        fig.error = " / ".join(f"{type(exc).__name__}: {exc}".splitlines())[:240]
        traceback.print_exc()
    state = fig.error or f"{fmt(fig.rate)} events/s"
    print(f"[{name}] done: {state}", flush=True)
    return fig


def table(figs: dict[str, Figure]) -> str:
    head = (
        "| figure | N | events/s | after join | 1st result s | latency p50 / p99 ms "
        "| queue+process p50 / p99 ms | decided / dead |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [head]
    for name in SCENARIOS:
        f = figs.get(name)
        if f is None:
            rows.append(f"| {name} | — | not run | | | | | |")
            continue
        if f.error:
            rows.append(f"| {name} | {f.events:,} | FAILED: {f.error} | | | | | |")
            continue
        lat = f"{fmt(percentile(f.latencies_ms, 0.5), '.1f')} / "
        lat += fmt(percentile(f.latencies_ms, 0.99), ".1f")
        e2e = "—"
        if f.e2e_ms:
            e2e = f"{fmt(percentile(f.e2e_ms, 0.5))} / {fmt(percentile(f.e2e_ms, 0.99))}"
        rows.append(
            f"| {name} | {f.events:,} | {fmt(f.rate)} | {fmt(f.steady_rate)} "
            f"| {fmt(f.first_s, '.2f')} | {lat} | {e2e} | {f.decided:,} / {f.dead:,} |"
        )
    return "\n".join(rows)


def ratios(figs: dict[str, Figure]) -> str:
    def rate(name: str, steady: bool = False) -> float | None:
        f = figs.get(name)
        if f is None:
            return None
        return f.steady_rate if steady else f.rate

    lines = [
        f"- Arbiter / naive: {ratio(rate('arbiter'), rate('naive'))} "
        f"(after join: {ratio(rate('arbiter', True), rate('naive', True))})",
        f"- Arbiter / passthrough: {ratio(rate('arbiter'), rate('passthrough'))} "
        f"(after join: {ratio(rate('arbiter', True), rate('passthrough', True))})",
    ]
    steps = breakdown(figs)
    return "\n".join([*lines, steps] if steps else lines)


def breakdown(figs: dict[str, Figure]) -> str:
    f = figs.get("naive")
    if f is None or f.error or not f.steps_ms:
        return ""
    parts = [f"{name} {fmt(percentile(v, 0.5), '.2f')}" for name, v in f.steps_ms.items()]
    return "- naive handler, p50 ms per step (valid events): " + ", ".join(parts)


def append_results(figs: dict[str, Figure], args: argparse.Namespace) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    produce = ", ".join(
        f"{n} {fmt(f.produce_rate)}/s" for n, f in figs.items() if f.produce_rate is not None
    )
    section = (
        f"\n## {now}\n\n"
        f"- machine: {os.cpu_count()} CPUs (nproc), Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, load average before the run "
        f"{args.load_before}\n"
        f"- git commit: {git_commit()}\n"
        f"- N: arbiter and passthrough {args.events:,}, naive {args.naive_events:,} "
        f"(seed {args.seed}, 2 % malformed, {PARTITIONS} partitions per topic)\n"
        f"- pre-fill produce rate: {produce or '—'}\n\n"
        f"{table(figs)}\n\n{ratios(figs)}\n"
    )
    if not RESULTS.exists():
        RESULTS.write_text(RESULTS_HEADER)
    with RESULTS.open("a") as out:
        out.write(section)


async def main_async(args: argparse.Namespace) -> dict[str, Figure]:
    from app.logs import configure_logging

    configure_logging("console", "error")  # one warning per dead letter would drown the table
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-") as tmp:
        root = Path(tmp)
        models_dir = args.models_dir or root / "models"
        print(f"models: {models_dir} (training if absent) …", flush=True)
        t0 = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(
            None, train_missing, models_dir, shipped_catalog()
        )
        # Load them once here, as the bench always has: the text encoder's one-time load
        # (~2 s, shared by the process) then falls before the arbiter's clock starts, so
        # queue+process on the pre-filled topic compares with earlier rows.
        await asyncio.get_running_loop().run_in_executor(None, scorer_from_folder, models_dir)
        print(f"models ready in {time.perf_counter() - t0:.1f}s", flush=True)
        sizes = {"arbiter": args.events, "naive": args.naive_events, "passthrough": args.events}
        figs: dict[str, Figure] = {}
        for name in args.only or SCENARIOS:
            figs[name] = await run_scenario(
                name,
                sizes[name],
                seed=args.seed,
                root=root,
                models_dir=models_dir,
                limit_s=args.timeout,
            )
    return figs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="N for arbiter/passthrough")
    parser.add_argument("--naive-events", type=int, default=6_000, help="N for the naive baseline")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per scenario")
    parser.add_argument("--only", action="append", choices=SCENARIOS, help="repeatable")
    parser.add_argument("--models-dir", type=Path, help="reuse trained models from here")
    parser.add_argument("--rules-dir", type=Path, help="rule files (default: Settings')")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    if args.rules_dir:
        SETTINGS_EXTRA["rules_dir"] = args.rules_dir
    # The machine is shared: a busy neighbour shows up here, not silently in the figures.
    args.load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())

    figs = asyncio.run(main_async(args))
    print()
    print(table(figs))
    print()
    print(ratios(figs))
    if not args.no_record:
        append_results(figs, args)
        print(f"\nappended to {RESULTS.relative_to(REPO)}")
    return 1 if any(f.error for f in figs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
