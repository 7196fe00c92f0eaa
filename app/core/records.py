"""Decisions and rejects as the ledger stores them, and back: plain mappers between the
core's values (``Decision``, ``Rejected``) and the store's records (``app.values``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.core.stages import Rejected, Valid, guess_event_id
from app.values import DeadLetterRecord, DecisionRecord
from schemas import Decision


def decision_record(
    decision: Decision, item: Valid, shadow_scores: dict[str, Any] | None = None
) -> DecisionRecord:
    return DecisionRecord(
        event_id=decision.event_id,
        event_type=decision.event_type,
        partition_key=decision.partition_key,
        decision=decision.decision,
        actions=[dict(a) for a in decision.actions],
        scores=dict(decision.scores),
        model_versions=dict(decision.model_versions),
        rules_fired=list(decision.rules_fired),
        reasons=list(decision.reasons),
        payload=item.payload,
        latency_ms=decision.latency_ms,
        occurred_at=decision.occurred_at,
        decided_at=decision.decided_at,
        source_topic=item.record.topic,
        source_partition=item.record.partition,
        source_offset=item.record.offset,
        ruleset_version=decision.ruleset_version,
        explanations={k: dict(v) for k, v in decision.explanations.items()},
        shadow_scores=dict(shadow_scores or {}),
    )


def decision_from_record(record: DecisionRecord) -> Decision:
    return Decision(
        event_id=record.event_id,
        event_type=record.event_type,
        partition_key=record.partition_key,
        decision=record.decision,
        actions=record.actions,
        scores=record.scores,
        model_versions=record.model_versions,
        rules_fired=record.rules_fired,
        reasons=record.reasons,
        occurred_at=record.occurred_at,
        decided_at=record.decided_at,
        latency_ms=record.latency_ms,
        ruleset_version=record.ruleset_version,
        explanations=record.explanations,
    )


def dead_letter_record(rejected: Rejected, at: datetime) -> DeadLetterRecord:
    record = rejected.record
    return DeadLetterRecord(
        event_type=record.event_type,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        event_id=guess_event_id(record.value),
        reason=rejected.error.reason,
        detail=rejected.error.detail,
        raw=record.value,
        key=record.key,
        created_at=at,
    )
