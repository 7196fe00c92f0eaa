"""The plain value types that several capabilities pass around.

A consumed record, an outgoing message, a decision or dead letter as the ledger stores
it, a webhook delivery owed, a model version's description and what one batch did. The
transports, the decision core, the store and the trainer all use them, so they sit at
the bottom of the layers and import nothing of ours: the store never has to import
inference or the outbox to name what it stores.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Header = tuple[str, bytes]


@dataclass(frozen=True)
class InRecord:
    """One consumed Kafka record, with the event type its topic names."""

    event_type: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    kind: str = "events"  # or "outcomes": which of the type's input topics it came from


@dataclass(frozen=True)
class OutMessage:
    """One record to publish: where, under which key, what, with which headers."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[Header, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class DecisionRecord:
    """One decision as the ledger stores it, with where its event came from."""

    event_id: str
    event_type: str
    partition_key: str
    decision: str
    actions: list[dict[str, Any]]
    scores: dict[str, Any]
    model_versions: dict[str, Any]
    rules_fired: list[str]
    reasons: list[str]
    payload: dict[str, Any]
    latency_ms: float
    occurred_at: datetime
    decided_at: datetime
    source_topic: str
    source_partition: int
    source_offset: int
    ruleset_version: str = ""
    explanations: dict[str, Any] = field(default_factory=dict)
    shadow_scores: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeadLetterRecord:
    """A record that could not be decided, kept with its original bytes and the reason."""

    event_type: str
    source_topic: str
    source_partition: int
    source_offset: int
    event_id: str | None
    reason: str
    detail: str
    raw: bytes
    key: bytes | None
    created_at: datetime


@dataclass(frozen=True)
class DecidedEvent:
    """A stored event as replays need it: what it was, how it scored, what was decided."""

    event_type: str
    partition_key: str
    occurred_at: datetime
    payload: dict[str, Any]
    scores: dict[str, Any]
    decision: str
    rules_fired: tuple[str, ...]
    ruleset_version: str


@dataclass(frozen=True)
class StoredDecision:
    """A decision found in the ledger; ``published`` is False until ``mark_published``."""

    record: DecisionRecord
    published: bool


@dataclass(frozen=True)
class RecordOutcome:
    """What ``Ledger.record`` wrote.

    ``duplicate_event_ids`` were already in the ledger (another writer decided them
    first, or this is a redelivery): their stored decision is the one that counts, so
    the caller loads it with ``find_decisions`` and publishes that instead.
    """

    inserted_event_ids: frozenset[str]
    duplicate_event_ids: frozenset[str]
    dead_letters_inserted: int


@dataclass(frozen=True)
class DeliveryRecord:
    """One delivery owed: ``payload`` (the decision JSON) to ``endpoint``, first due at
    ``created_at``; ``partition_key`` orders deliveries of one key on ordered endpoints."""

    event_id: str
    endpoint: str
    partition_key: str
    payload: dict[str, Any]
    created_at: datetime

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.event_id, self.endpoint)


def idempotency_key(event_id: str, endpoint: str) -> str:
    """The ``Idempotency-Key`` of a delivery: the same for every attempt and every replay."""
    return f"{event_id}:{endpoint}"


@dataclass(frozen=True)
class ModelMeta:
    """What the registry knows about one model version (also ``meta.json`` beside it)."""

    name: str  # "transaction.fraud"
    version: int
    family: str  # "tabular" | "text"
    kind: str  # "binary" (score = P(positive)) | "multiclass" (score = top label)
    features: tuple[str, ...]
    metrics: dict[str, float]
    created_at: str  # ISO 8601, UTC
    trained_on: str  # a sentence: where the training data came from
    window_start: str = ""  # ISO 8601 of the oldest training example ("" if unknown)
    window_end: str = ""  # ISO 8601 of the newest training example
    classes: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # e.g. {"encoder": "minilm-int8"}
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256

    @property
    def tag(self) -> str:
        return f"v{self.version}"


@dataclass
class BatchResult:
    """What one batch did — fed to progress displays and the canonical log line."""

    records: int = 0
    decided: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, decision)
    dead_lettered: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, reason)
    redelivered: int = 0
    redelivered_types: Counter[str] = field(default_factory=Counter)  # the same, per type
    republished: int = 0
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, result)
    latencies_ms: list[float] = field(default_factory=list)
    # produce-time → decision-stored, per new decision (end-to-end through Kafka)
    e2e_ms: list[float] = field(default_factory=list)

    def merge(self, other: BatchResult) -> None:
        """Add ``other``'s counts to this one (``records`` is set by the caller)."""
        self.decided.update(other.decided)
        self.dead_lettered.update(other.dead_lettered)
        self.outcomes.update(other.outcomes)
        self.redelivered += other.redelivered
        self.redelivered_types.update(other.redelivered_types)
        self.republished += other.republished
        self.latencies_ms.extend(other.latencies_ms)
        self.e2e_ms.extend(other.e2e_ms)

    def summary(self) -> dict[str, Any]:
        """The fields of the canonical one-line-per-batch log event."""
        return {
            "records": self.records,
            "decided": sum(self.decided.values()),
            "dead_lettered": sum(self.dead_lettered.values()),
            "redelivered": self.redelivered,
            "republished": self.republished,
            "outcomes": sum(self.outcomes.values()),
            "max_latency_ms": round(max(self.latencies_ms, default=0.0), 2),
        }
