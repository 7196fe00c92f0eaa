"""The pure stages of the hot path: records in, decisions and dead letters out.

Everything here takes and returns plain values and does no I/O, so the decision logic is
tested, replayed and benchmarked without a broker or a database. ``processor.py`` is
the thin shell that feeds these stages from Kafka and writes their results to the
ledger and the outbound topics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from app.core.decode import decode_event, decode_outcome
from app.declarations.spec import LabelSpec
from app.errors import InvalidEvent
from app.values import InRecord
from schemas import Decision, EventCore, Outcome


@dataclass(frozen=True)
class Valid:
    record: InRecord
    event: EventCore
    payload: dict[str, Any]  # event.model_dump(mode="json"), computed once per event


@dataclass(frozen=True)
class Rejected:
    record: InRecord
    error: InvalidEvent


class RuleOutcome(Protocol):
    """What the rules said about one event (``app.rules.runtime.result.RuleResult`` is one)."""

    @property
    def decision(self) -> str: ...
    @property
    def rule(self) -> str | None: ...
    @property
    def reason(self) -> str: ...
    @property
    def rules_fired(self) -> tuple[str, ...]: ...
    @property
    def reasons(self) -> tuple[str, ...]: ...
    @property
    def actions(self) -> tuple[Mapping[str, Any], ...]: ...
    @property
    def ruleset_version(self) -> str: ...


def decode_batch(
    records: Sequence[InRecord],
    *,
    max_bytes: int,
    models: Mapping[str, type[EventCore]],
) -> tuple[list[Valid], list[Rejected]]:
    """Split a batch into validated events and rejects (with the reason), order kept."""
    valid: list[Valid] = []
    rejected: list[Rejected] = []
    for record in records:
        try:
            event = decode_event(
                record.event_type, record.value, max_bytes=max_bytes, models=models
            )
        except InvalidEvent as exc:
            rejected.append(Rejected(record, exc))
            continue
        except Exception as exc:  # a decoder bug must not stall a partition
            detail = (
                f"the decoder failed on this record ({type(exc).__name__}: {exc}); "
                "it is kept here so it can be replayed once the bug is fixed"
            )
            rejected.append(Rejected(record, InvalidEvent("decode_error", detail)))
            continue
        valid.append(Valid(record, event, event.model_dump(mode="json")))
    return valid, rejected


def decode_outcomes(
    records: Sequence[InRecord],
    *,
    max_bytes: int,
    labels: Mapping[str, Sequence[LabelSpec]] | None = None,
) -> tuple[list[Outcome], list[Rejected]]:
    """Split records from ``outcomes.<type>`` into outcomes and rejects, order kept;
    ``labels``: per type, its declared labels (checked when given)."""
    valid: list[Outcome] = []
    rejected: list[Rejected] = []
    for record in records:
        try:
            declared = None if labels is None else labels.get(record.event_type, ())
            valid.append(
                decode_outcome(
                    record.event_type, record.value, max_bytes=max_bytes, labels=declared
                )
            )
        except InvalidEvent as exc:
            rejected.append(Rejected(record, exc))
    return valid, rejected


def first_of_each_event(valid: Sequence[Valid]) -> tuple[list[Valid], list[Valid]]:
    """Keep the first record of each event_id; later copies in the same batch are redeliveries."""
    seen: set[str] = set()
    first: list[Valid] = []
    repeats: list[Valid] = []
    for item in valid:
        if item.event.event_id in seen:
            repeats.append(item)
        else:
            seen.add(item.event.event_id)
            first.append(item)
    return first, repeats


def rule_facts(payload: Mapping[str, Any], scores: Mapping[str, float | str]) -> dict[str, Any]:
    """The fact the rules see: the event's fields plus its model scores under ``scores``."""
    return {**payload, "scores": dict(scores)}


def explanation_sentence(
    model: str, version: str, scores: Mapping[str, float | str], explanation: Mapping[str, Any]
) -> str:
    """One readable line on why a model scored what it did, for ``Decision.reasons``."""
    key = model.split(".", 1)[-1]
    method = str(explanation.get("method", "?"))
    if method == "not_trained":
        return f"{model}: {explanation.get('detail', 'not trained yet')}."
    top = [(str(t[0]), float(t[1])) for t in explanation.get("top", []) if len(t) == 2]
    value = scores.get(key, "?")
    if method == "top-classes":
        others = ", ".join(f"{label} {p:.0%}" for label, p in top[1:])
        sure = f" ({float(scores.get(f'{key}_confidence', 0.0)):.0%} sure)"
        return f"{model} {version}: {key} {value}{sure}" + (f"; next: {others}." if others else ".")
    shown = f"{value:.3f}" if isinstance(value, float) else str(value)
    terms = ", ".join(f"{feature} {c:+.2f}" for feature, c in top)
    return f"{model} {version}: {key} {shown}; top contributions ({method}, log-odds): {terms}."


def assemble_decisions(
    items: Sequence[Valid],
    scores: Sequence[Mapping[str, float | str]],
    outcomes: Sequence[RuleOutcome],
    *,
    explanations: Sequence[Mapping[str, Mapping[str, Any]]] | None = None,
    model_versions: Mapping[str, Mapping[str, str]],
    decisions_topic: Mapping[str, str],
    received_at: datetime,
    decided_at: datetime,
) -> list[Decision]:
    """One ``Decision`` per event, carrying everything that led to it."""
    latency_ms = max((decided_at - received_at).total_seconds() * 1000.0, 0.0)
    decisions = []
    why = explanations if explanations is not None else [{} for _ in items]
    for item, score, outcome, explained in zip(items, scores, outcomes, why, strict=True):
        event = item.event
        versions = model_versions.get(event.event_type, {})
        model_reasons = tuple(
            explanation_sentence(name, versions.get(name, "?"), score, explanation)
            for name, explanation in sorted(explained.items())
        )
        decisions.append(
            Decision(
                event_id=event.event_id,
                event_type=event.event_type,
                partition_key=event.partition_key,
                decision=outcome.decision,
                actions=[
                    {"type": "publish", "topic": decisions_topic[event.event_type]},
                    *(dict(action) for action in outcome.actions),
                ],
                scores=dict(score),
                model_versions=dict(versions),
                rules_fired=outcome.rules_fired or ((outcome.rule,) if outcome.rule else ()),
                reasons=(*(outcome.reasons or (outcome.reason,)), *model_reasons),
                explanations={name: dict(e) for name, e in explained.items()},
                ruleset_version=outcome.ruleset_version,
                occurred_at=event.occurred_at,
                decided_at=decided_at,
                latency_ms=round(latency_ms, 3),
            )
        )
    return decisions


def dead_letter_headers(rejected: Rejected) -> tuple[tuple[str, bytes], ...]:
    """Headers that travel with the original bytes to ``dlq.<type>``: why, and from where."""
    record = rejected.record
    return (
        ("arbiter.reason", rejected.error.reason.encode()),
        ("arbiter.detail", _clip_utf8(rejected.error.detail, 4096)),
        ("arbiter.source.topic", record.topic.encode()),
        ("arbiter.source.partition", str(record.partition).encode()),
        ("arbiter.source.offset", str(record.offset).encode()),
    )


def _clip_utf8(text: str, limit: int) -> bytes:
    """At most ``limit`` bytes of UTF-8, never cutting a character in half."""
    return text.encode()[:limit].decode(errors="ignore").encode()


def guess_event_id(raw: bytes) -> str | None:
    """Best effort: the event_id of a rejected record, for operators searching by id."""
    import json

    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # hostile nesting must not stall a partition
        return None
    if isinstance(data, dict):
        value = data.get("event_id")
        if isinstance(value, str) and 0 < len(value) <= 64:
            return value
    return None


def utcnow() -> datetime:
    return datetime.now(UTC)
