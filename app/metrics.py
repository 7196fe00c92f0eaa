"""Prometheus metrics of the running service, served at ``/metrics`` (docs/metrics.md).

Names follow Prometheus conventions: ``arbiter_<thing>_total`` counters, ``_seconds``
histograms, bounded labels (event types, decisions, reason codes, rule and model names —
never an event id). The decision path is counted once per batch (``observe_batch``), never
per event in the hot loops.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Mapping, Sequence, Set
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from app.values import BatchResult
from schemas import Decision

RULES_RELOADS = Counter(
    "arbiter_rules_reloads_total",
    "Rule-file changes seen by a running consumer, by result (applied or refused).",
    ["result"],
)
DECLARATIONS_RELOADS = Counter(
    "arbiter_declarations_reloads_total",
    "Event type declaration changes seen by a running consumer, by result (applied or refused).",
    ["result"],
)

OUTCOMES = Counter(
    "arbiter_outcomes_total",
    "Outcomes received, by event type and result: stored (its decision is known), "
    "before_decision (kept; joins when the decision is stored — or never, for an event "
    "Arbiter did not see) and duplicate (the same report again, not written).",
    ["type", "result"],
)

TRAINER_RUNS = Counter(
    "arbiter_trainer_runs_total",
    "Training runs by model and result: promoted, kept (a challenger, not better), "
    "skipped (not enough data) and failed.",
    ["model", "result"],
)

DRIFT_PSI = Gauge(
    "arbiter_drift_psi",
    "Population stability index of a model's main input features and its score, recent "
    "decisions against its training window (0.1 notice, 0.25 alert).",
    ["model", "feature"],
)

DRIFT_LABEL_RATE = Gauge(
    "arbiter_drift_label_rate",
    "Share of positive outcomes among a model's recent labelled decisions (window=recent) "
    "and in its training data (window=training).",
    ["model", "window"],
)

DRIFT_AUC = Gauge(
    "arbiter_drift_recent_auc",
    "The champion's ROC-AUC on its recent labelled decisions (window=recent) and on its "
    "training holdout (window=holdout).",
    ["model", "window"],
)

WEBHOOK_DELIVERIES = Counter(
    "arbiter_webhook_deliveries_total",
    "Webhook delivery attempts by endpoint and result: delivered (2xx), retry (5xx, 408, "
    "429, timeout or connection error; tried again later) and failed (a 4xx, or the last "
    "allowed attempt: the delivery is dead-lettered until `arbiter deliveries retry`).",
    ["endpoint", "result"],
)

# --- the decision path: one ``observe_batch`` call per batch ---------------------------

# 1 ms … 60 s: a decision inside a batch takes milliseconds, a backlog takes seconds.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
SCORE_BUCKETS = tuple(round(i * 0.05, 2) for i in range(1, 21))  # 0.05 … 1.0
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)

EVENTS = Counter(
    "arbiter_events_total",
    "Events consumed, by event type and result: decided (a new decision stored), "
    "dead_lettered (invalid or poison, kept in dlq.<type>) and redelivered (already decided: "
    "a repeat, a retried batch or another consumer won).",
    ["type", "result"],
)

DEAD_LETTERS = Counter(
    "arbiter_dead_letters_total",
    "Events dead-lettered, by event type and reason code.",
    ["type", "reason"],
)

DECISIONS = Counter(
    "arbiter_decisions_total",
    "New decisions stored, by event type and decision (the names rule files give).",
    ["type", "decision"],
)

BATCH_SIZE = Histogram(
    "arbiter_batch_size",
    "Records per processed batch (events and outcomes).",
    buckets=BATCH_BUCKETS,
)

DECIDE_LATENCY = Histogram(
    "arbiter_decide_latency_seconds",
    "Batch received → decided, per new decision (the decision's latency_ms).",
    ["type"],
    buckets=LATENCY_BUCKETS,
)

END_TO_END = Histogram(
    "arbiter_end_to_end_seconds",
    "Event occurred_at → decision stored, per new decision. Events replayed with old "
    "timestamps land in +Inf; see arbiter_record_to_decision_seconds for the Kafka leg.",
    ["type"],
    buckets=LATENCY_BUCKETS,
)

RECORD_TO_DECISION = Histogram(
    "arbiter_record_to_decision_seconds",
    "Kafka record timestamp (produce time) → decision stored, per new decision.",
    buckets=LATENCY_BUCKETS,
)

CONSUME_TO_COMMIT = Histogram(
    "arbiter_consume_to_commit_seconds",
    "Batch fetched from Kafka → its offsets committed (stored and published in between).",
    buckets=LATENCY_BUCKETS,
)

CONSUMER_LAG = Gauge(
    "arbiter_consumer_lag",
    "Records not yet consumed per assigned partition: the fetch high-water mark minus the "
    "consumer's position, never negative; refreshed at most once a second.",
    ["topic", "partition"],
)

RULE_HITS = Counter(
    "arbiter_rule_hits_total",
    "Rules fired on new decisions, by event type, rule name and ruleset version.",
    ["type", "rule", "ruleset_version"],
)

MODEL_SCORE = Histogram(
    "arbiter_model_score",
    "Champion scores of binary (tabular) models on new decisions.",
    ["model"],
    buckets=SCORE_BUCKETS,
)

MODEL_LABEL = Counter(
    "arbiter_model_label_total",
    "Predicted class of text heads' champions on new decisions.",
    ["model", "label"],
)

MODEL_VERSION_INFO = Gauge(
    "arbiter_model_version_info",
    "1 for each model version in service, by role (champion or shadow); versions that "
    "left service disappear.",
    ["model", "version", "role"],
)


def _observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe`` for each value, counted into buckets first (one ``inc`` per
    bucket, not per value): keeps a 500-event batch's cost small."""
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if buckets is None or bounds is None or total is None:  # another client version
        for value in values:
            histogram.observe(value)
        return
    counts: dict[int, int] = {}
    for value in values:
        i = bisect_left(bounds, value)  # first bound >= value, as ``observe`` does
        counts[i] = counts.get(i, 0) + 1
    for i, n in counts.items():
        buckets[i].inc(n)
    total.inc(math.fsum(values))


def observe_batch(
    result: BatchResult, decisions: Sequence[Decision], *, at: datetime | None = None
) -> None:
    """Count one processed batch: ``result``'s counters and the new ``decisions`` stored
    (``at``: when they were stored). Called once per batch, after the ledger write."""
    _count_result(result)
    if decisions:
        _observe_decisions(decisions, at or datetime.now(UTC))


def _count_result(result: BatchResult) -> None:
    if result.records:
        BATCH_SIZE.observe(result.records)
    per_type: dict[tuple[str, str], int] = {}  # (type, result) -> events
    for (event_type, decision), n in result.decided.items():
        DECISIONS.labels(type=event_type, decision=decision).inc(n)
        per_type[(event_type, "decided")] = per_type.get((event_type, "decided"), 0) + n
    for (event_type, reason), n in result.dead_lettered.items():
        DEAD_LETTERS.labels(type=event_type, reason=reason).inc(n)
        key = (event_type, "dead_lettered")
        per_type[key] = per_type.get(key, 0) + n
    for event_type, n in result.redelivered_types.items():
        per_type[(event_type, "redelivered")] = n
    for (event_type, outcome), n in per_type.items():
        EVENTS.labels(type=event_type, result=outcome).inc(n)
    if result.e2e_ms:
        _observe_many(RECORD_TO_DECISION, [ms / 1000.0 for ms in result.e2e_ms])


def _observe_decisions(decisions: Sequence[Decision], at: datetime) -> None:
    stored_s = at.timestamp()
    latency: dict[str, list[float]] = {}
    e2e: dict[str, list[float]] = {}
    hits: dict[tuple[str, str, str], int] = {}
    scores: dict[str, list[float]] = {}
    labels: dict[tuple[str, str], int] = {}
    for d in decisions:
        latency.setdefault(d.event_type, []).append(d.latency_ms / 1000.0)
        e2e.setdefault(d.event_type, []).append(max(stored_s - d.occurred_at.timestamp(), 0.0))
        for rule in d.rules_fired:
            hit = (d.event_type, rule, d.ruleset_version)
            hits[hit] = hits.get(hit, 0) + 1
        for model in d.model_versions:
            score = d.scores.get(model.partition(".")[2])  # "transaction.fraud" -> "fraud"
            if isinstance(score, str):
                labels[(model, score)] = labels.get((model, score), 0) + 1
            elif isinstance(score, int | float):
                scores.setdefault(model, []).append(float(score))
    for event_type, values in latency.items():
        _observe_many(DECIDE_LATENCY.labels(type=event_type), values)
    for event_type, values in e2e.items():
        _observe_many(END_TO_END.labels(type=event_type), values)
    for (event_type, rule, version), n in hits.items():
        RULE_HITS.labels(type=event_type, rule=rule, ruleset_version=version).inc(n)
    for model, values in scores.items():
        _observe_many(MODEL_SCORE.labels(model=model), values)
    for (model, label), n in labels.items():
        MODEL_LABEL.labels(model=model, label=label).inc(n)


def set_versions_in_service(in_service: Mapping[str, tuple[int, tuple[int, ...]]]) -> None:
    """Show the model versions now in service (``Scorer.in_service()``): the gauge is
    cleared first, so a retired version's series disappears."""
    MODEL_VERSION_INFO.clear()
    for model, (champion, shadows) in in_service.items():
        MODEL_VERSION_INFO.labels(model=model, version=f"v{champion}", role="champion").set(1)
        for version in shadows:
            MODEL_VERSION_INFO.labels(model=model, version=f"v{version}", role="shadow").set(1)


class PartitionLike(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...


class OffsetSource(Protocol):
    """What lag needs from a consumer (aiokafka's ``AIOKafkaConsumer`` fits)."""

    def assignment(self) -> Set[Any]: ...
    def highwater(self, partition: Any) -> int | None: ...


def lag(highwater: int | None, position: int | None) -> int | None:
    """Records behind: None when either end is unknown, never negative (Tansu's end
    offsets can be too low for multi-record batches, so a low high-water reads as 0)."""
    if highwater is None or position is None:
        return None
    return max(highwater - position, 0)


class LagReporter:
    """Sets ``arbiter_consumer_lag`` from fetch high-water marks and known positions, at
    most once per ``interval_s``; partitions no longer assigned are dropped."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self._interval_s = interval_s
        self._next = 0.0
        self._shown: set[tuple[str, str]] = set()

    def update(
        self, consumer: OffsetSource, positions: Mapping[Any, int], *, force: bool = False
    ) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self._interval_s
        shown: set[tuple[str, str]] = set()
        for tp in consumer.assignment():
            behind = lag(consumer.highwater(tp), positions.get(tp))
            if behind is None:
                continue
            key = (str(tp.topic), str(tp.partition))
            CONSUMER_LAG.labels(topic=key[0], partition=key[1]).set(behind)
            shown.add(key)
        for topic, partition in self._shown - shown:
            CONSUMER_LAG.remove(topic, partition)
        self._shown = shown
