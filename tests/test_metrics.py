"""Metrics and logs of the decision path: a real batch over a real SQLite ledger moves the
Prometheus counters and histograms by its counts; versions in service, consumer lag and
label cardinality stay honest; the JSON log format writes one object per line."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiokafka import TopicPartition
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest

from app.inference.scoring import Scorer
from app.logs import configure_logging
from app.metrics import (
    LATENCY_BUCKETS,
    LagReporter,
    _observe_many,
    lag,
    observe_batch,
    set_versions_in_service,
)
from app.pipeline.processor import BatchProcessor
from app.settings import Settings
from app.simulator.generate import SimEvent, generate
from app.store import create_engine, migrate
from app.store.ledger import Ledger
from app.values import BatchResult, InRecord, OutMessage
from app.wiring import event_types, load_rules_engine
from schemas import Decision

pytestmark = [pytest.mark.sqlite]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class Run:
    processor: BatchProcessor
    sent: list[OutMessage]
    events: list[SimEvent]
    records: list[InRecord]


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    """A processor over a migrated SQLite ledger, the real rules, no models, and a batch of
    transactions of which some are malformed."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await migrate.upgrade(url)
    engine = create_engine(url)
    settings = Settings()
    sent: list[OutMessage] = []

    async def publish(messages: Sequence[OutMessage]) -> None:
        sent.extend(messages)

    processor = BatchProcessor(
        ledger=Ledger(engine),
        scorer=Scorer({}),
        rules=load_rules_engine(settings),
        publish=publish,
        topic_for=settings.topic,  # type: ignore[arg-type]
        max_event_bytes=settings.max_event_bytes,
        types=event_types(settings),
    )
    events = [
        e for e in generate(120, seed=31, malformed_rate=0.2) if e.event_type == "transaction"
    ]
    records = [
        InRecord("transaction", "events.transaction", 0, i, e.key, e.value, 1_700_000_000_000)
        for i, e in enumerate(events)
    ]
    try:
        yield Run(processor, sent, events, records)
    finally:
        processor.close()
        await engine.dispose()


SERIES = {
    "decided": ("arbiter_events_total", {"type": "transaction", "result": "decided"}),
    "dead": ("arbiter_events_total", {"type": "transaction", "result": "dead_lettered"}),
    "again": ("arbiter_events_total", {"type": "transaction", "result": "redelivered"}),
    "batches": ("arbiter_batch_size_count", {}),
    "latency": ("arbiter_decide_latency_seconds_count", {"type": "transaction"}),
    "e2e": ("arbiter_end_to_end_seconds_count", {"type": "transaction"}),
    "record_e2e": ("arbiter_record_to_decision_seconds_count", {}),
}


def snapshot() -> dict[str, float]:
    return {k: sample(name, **labels) for k, (name, labels) in SERIES.items()}


def moved(before: dict[str, float]) -> dict[str, float]:
    after = snapshot()
    return {k: after[k] - before[k] for k in SERIES}


async def test_a_batch_moves_event_decision_and_latency_metrics_by_its_counts(run: Run) -> None:
    """One batch: events decided and dead-lettered, decisions per decision name, rule hits
    and one latency observation per new decision; the same batch again counts only as
    redelivered."""
    decisions_before = {
        (s.labels["type"], s.labels["decision"]): s.value
        for m in REGISTRY.collect()
        for s in m.samples
        if s.name == "arbiter_decisions_total"
    }
    before = snapshot()
    result = await run.processor.process(run.records)
    decided = sum(result.decided.values())
    dead = sum(result.dead_lettered.values())
    assert decided, "the batch should hold valid events"
    assert dead, "the batch should hold malformed events"
    assert moved(before) == {
        "decided": decided,
        "dead": dead,
        "again": 0,
        "batches": 1,
        "latency": decided,
        "e2e": decided,
        "record_e2e": decided,
    }
    for (event_type, decision), n in result.decided.items():
        base = decisions_before.get((event_type, decision), 0.0)
        assert sample("arbiter_decisions_total", type=event_type, decision=decision) - base == n
    for (event_type, reason), n in result.dead_lettered.items():
        assert sample("arbiter_dead_letters_total", type=event_type, reason=reason) >= n

    published = [
        json.loads(m.value) for m in run.sent if m.topic.startswith("decisions.transaction")
    ]
    fired = Counter((r, d["ruleset_version"]) for d in published for r in d["rules_fired"])
    for (rule, version), n in fired.items():
        hits = sample(
            "arbiter_rule_hits_total", type="transaction", rule=rule, ruleset_version=version
        )
        assert hits >= n

    before = snapshot()
    again = await run.processor.process(run.records)
    assert moved(before) == {
        "decided": 0,
        "dead": 0,
        "again": again.redelivered,
        "batches": 1,
        "latency": 0,
        "e2e": 0,
        "record_e2e": 0,
    }
    assert again.redelivered == decided


async def test_no_event_id_appears_in_the_metrics_output_after_a_batch(run: Run) -> None:
    """Labels are bounded: the exposition names types, decisions and rules, never an event."""
    await run.processor.process(run.records)
    text = generate_latest().decode()
    assert 'arbiter_events_total{result="decided",type="transaction"}' in text
    ids = [e.event_id for e in run.events if e.event_id]
    assert ids
    assert not [i for i in ids if i in text]


def test_model_scores_and_predicted_labels_are_counted_per_model() -> None:
    """A binary model's score lands in its score histogram; a text head's predicted class is
    counted under that class; both keyed by the model name, not the event."""
    now = datetime.now(UTC)
    common: dict[str, Any] = {
        "partition_key": "c1",
        "decision": "approve",
        "occurred_at": now - timedelta(seconds=2),
        "decided_at": now,
        "latency_ms": 12.0,
        "ruleset_version": "abc123",
        "rules_fired": (),
    }
    decisions = [
        Decision.model_construct(
            event_id="e-score",
            event_type="transaction",
            scores={"fraud": 0.93},
            model_versions={"transaction.fraud": "v1"},
            **common,
        ),
        Decision.model_construct(
            event_id="e-label",
            event_type="ticket",
            scores={"category": "billing", "category_confidence": 0.8},
            model_versions={"ticket.category": "v1"},
            **common,
        ),
    ]
    high = sample("arbiter_model_score_bucket", model="transaction.fraud", le="0.95")
    low = sample("arbiter_model_score_bucket", model="transaction.fraud", le="0.9")
    billing = sample("arbiter_model_label_total", model="ticket.category", label="billing")
    e2e = sample("arbiter_end_to_end_seconds_bucket", type="ticket", le="2.5")

    observe_batch(BatchResult(), decisions, at=now)

    assert sample("arbiter_model_score_bucket", model="transaction.fraud", le="0.95") == high + 1
    assert sample("arbiter_model_score_bucket", model="transaction.fraud", le="0.9") == low
    assert sample("arbiter_model_label_total", model="ticket.category", label="billing") == (
        billing + 1
    )
    assert sample("arbiter_end_to_end_seconds_bucket", type="ticket", le="2.5") == e2e + 1


def test_bulk_observation_gives_the_same_histogram_as_observing_one_by_one() -> None:
    """The per-bucket bulk path is only a shortcut: same buckets, count and sum."""
    registry = CollectorRegistry()
    one = Histogram("one_seconds", "x", buckets=LATENCY_BUCKETS, registry=registry)
    bulk = Histogram("bulk_seconds", "x", buckets=LATENCY_BUCKETS, registry=registry)
    values = [0.0, 0.001, 0.0011, 0.05, 0.7, 2.5, 59.0, 61.0, 3600.0]
    for v in values:
        one.observe(v)
    _observe_many(bulk, values)
    for metric in ("bucket", "count", "sum"):
        got = {
            tuple(sorted(s.labels.items())): s.value
            for m in registry.collect()
            if m.name == "bulk_seconds"
            for s in m.samples
            if s.name == f"bulk_seconds_{metric}"
        }
        want = {
            tuple(sorted(s.labels.items())): s.value
            for m in registry.collect()
            if m.name == "one_seconds"
            for s in m.samples
            if s.name == f"one_seconds_{metric}"
        }
        assert got == pytest.approx(want)


def test_the_version_info_gauge_drops_a_retired_version_after_a_swap() -> None:
    """After a promotion, the old champion and the promoted shadow's shadow series are gone."""
    set_versions_in_service({"transaction.fraud": (1, (2,)), "order.risk": (3, ())})
    info = "arbiter_model_version_info"
    assert (
        REGISTRY.get_sample_value(
            info, {"model": "transaction.fraud", "version": "v2", "role": "shadow"}
        )
        == 1
    )
    set_versions_in_service({"transaction.fraud": (2, ()), "order.risk": (3, ())})
    assert (
        REGISTRY.get_sample_value(
            info, {"model": "transaction.fraud", "version": "v1", "role": "champion"}
        )
        is None
    )
    assert (
        REGISTRY.get_sample_value(
            info, {"model": "transaction.fraud", "version": "v2", "role": "shadow"}
        )
        is None
    )
    assert (
        REGISTRY.get_sample_value(
            info, {"model": "transaction.fraud", "version": "v2", "role": "champion"}
        )
        == 1
    )
    assert (
        REGISTRY.get_sample_value(
            info, {"model": "order.risk", "version": "v3", "role": "champion"}
        )
        == 1
    )


class FakeOffsets:
    """Assignment and fetch high-water marks, as aiokafka's consumer reports them."""

    def __init__(self, highwater: dict[TopicPartition, int | None]) -> None:
        self.marks = highwater

    def assignment(self) -> set[TopicPartition]:
        return set(self.marks)

    def highwater(self, partition: TopicPartition) -> int | None:
        return self.marks[partition]


def test_consumer_lag_is_never_negative_and_follows_the_assignment() -> None:
    """A high-water mark below the position (Tansu's end-offset bug) reads as 0, an unknown
    one is not shown, and a partition that leaves the assignment disappears."""
    a, b, c = (TopicPartition("events.lag-test", p) for p in (0, 1, 2))
    assert lag(5, 9) == 0
    assert lag(None, 9) is None
    reporter = LagReporter(interval_s=60.0)
    consumer = FakeOffsets({a: 120, b: 3, c: None})
    reporter.update(consumer, {a: 100, b: 10, c: 4})
    get = REGISTRY.get_sample_value
    assert get("arbiter_consumer_lag", {"topic": "events.lag-test", "partition": "0"}) == 20
    assert get("arbiter_consumer_lag", {"topic": "events.lag-test", "partition": "1"}) == 0
    assert get("arbiter_consumer_lag", {"topic": "events.lag-test", "partition": "2"}) is None

    consumer.marks = {a: 130}
    reporter.update(consumer, {a: 100})  # within the interval: not refreshed
    assert get("arbiter_consumer_lag", {"topic": "events.lag-test", "partition": "0"}) == 20
    reporter.update(consumer, {a: 100}, force=True)
    assert get("arbiter_consumer_lag", {"topic": "events.lag-test", "partition": "0"}) == 30
    assert get("arbiter_consumer_lag", {"topic": "events.lag-test", "partition": "1"}) is None


def test_observing_a_500_event_batch_stays_cheap() -> None:
    """observe_batch is called once per batch; for 500 decisions it stays well under 5 ms
    (docs/metrics.md states the measured figure)."""
    now = datetime.now(UTC)
    decisions = [
        Decision.model_construct(
            event_id=f"e{i}",
            event_type="transaction",
            partition_key="c1",
            decision="approve" if i % 3 else "review",
            occurred_at=now - timedelta(milliseconds=40),
            decided_at=now,
            latency_ms=3.0 + i % 7,
            ruleset_version="abc123",
            rules_fired=("big_amount",) if i % 5 == 0 else (),
            scores={"fraud": (i % 100) / 100},
            model_versions={"transaction.fraud": "v1"},
        )
        for i in range(500)
    ]
    result = BatchResult(records=500, e2e_ms=[5.0] * 500)
    result.decided.update(Counter(("transaction", d.decision) for d in decisions))
    started = time.perf_counter()
    for _ in range(100):
        observe_batch(result, decisions, at=now)
    per_batch = (time.perf_counter() - started) / 100
    assert per_batch < 0.005


def test_the_json_log_format_writes_one_json_object_per_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """structlog events and standard-library records alike come out as one JSON object per
    line, with the event name, level and timestamp."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("json", "info")
        log = structlog.get_logger("arbiter.test")
        log.info("batch", records=3, decided=2, models={"transaction.fraud": "v1"})
        log.error("batch failed; rewinding and retrying", error="boom\nsecond line")
        logging.getLogger("aiokafka").warning("rebalance")
        sys.stderr.flush()
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    finally:
        structlog.reset_defaults()
        root.handlers[:], level = saved
        root.setLevel(level)
    objects = [json.loads(line) for line in lines]
    assert [o["event"] for o in objects] == [
        "batch",
        "batch failed; rewinding and retrying",
        "rebalance",
    ]
    assert all(isinstance(o, dict) and "timestamp" in o and "level" in o for o in objects)
    assert objects[0]["decided"] == 2
