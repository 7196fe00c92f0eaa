"""The whole-batch decision: events nobody decided yet in, one ``Decision`` each out.

For a batch of validated events (several types mixed, in record order) it groups by
type, scores each group with one call per model, feeds the correlation windows in record
order across types (so "a ticket, then a transfer" sees the ticket), runs one rules pass
per type and assembles the decisions. The scorer, the rules and the windows are passed
in as values; nothing here reads a database or a broker, so the consume loop,
``/v1/decide``, ``run_batch`` and the tests all decide through this one function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from app.core.stages import RuleOutcome, Valid, assemble_decisions, rule_facts, utcnow
from app.inference.scoring import ScoredBatch
from schemas import Decision, EventCore


class Scores(Protocol):
    """What deciding needs of the models (``app.inference.scoring.Scorer`` is one)."""

    def score_batch(self, event_type: str, events: Sequence[EventCore]) -> ScoredBatch: ...
    def uses_text(self, event_type: str) -> bool: ...


class Rules(Protocol):
    """What deciding needs of the rules (``RulesEngine`` is one): one outcome per fact."""

    def evaluate(
        self, event_type: str, facts: Sequence[Mapping[str, Any]]
    ) -> Sequence[RuleOutcome]: ...


class Windows(Protocol):
    """Correlation windows: count an event and read the windows its rules use
    (``WindowStore`` and the service's ``Correlator`` are both one)."""

    @property
    def active(self) -> bool: ...
    def observe(
        self, event_type: str, key: str, at: Any, fact: Mapping[str, Any]
    ) -> dict[str, float]: ...


@dataclass(frozen=True)
class Decided:
    """One new decision, the event it was made for, and what the shadow models said."""

    decision: Decision
    item: Valid
    shadow_scores: dict[str, Any]


def decide_batch(
    fresh: Sequence[Valid],
    *,
    scorer: Scores,
    rules: Rules,
    windows: Windows | None,
    decisions_topic: Callable[[str], str],
    received_at: datetime,
    text_pool: Executor | None = None,
    declared_models: Mapping[str, Sequence[str]] | None = None,
) -> list[Decided]:
    """Score and apply rules to ``fresh`` (events nobody decided yet), grouped by type.

    ``text_pool``: when given, types scored with a text model are scored on it while the
    other types score on the calling thread (the encoder and the tabular models then use
    a core each). The output is grouped by type, in record order within a type.
    ``declared_models``: per type, the models its declaration names; one without a
    version in service gets an explanation saying it is not trained yet (its score is
    missing, so a rule that reads it does not match).
    """
    by_type: dict[str, list[Valid]] = {}
    for item in fresh:
        by_type.setdefault(item.event.event_type, []).append(item)
    scored: dict[str, ScoredBatch] = {}
    text_jobs = {
        t: text_pool.submit(scorer.score_batch, t, [i.event for i in items])
        for t, items in by_type.items()
        if text_pool is not None and scorer.uses_text(t)
    }
    for event_type, items in by_type.items():
        if event_type not in text_jobs:
            scored[event_type] = scorer.score_batch(event_type, [i.event for i in items])
    for event_type, job in text_jobs.items():
        scored[event_type] = job.result()
    facts: dict[int, dict[str, Any]] = {}
    for event_type, items in by_type.items():
        for item, score in zip(items, scored[event_type].scores, strict=True):
            facts[id(item)] = rule_facts(item.payload, score)
    if windows is not None and windows.active:
        # In record order across types: "a ticket, then a transfer" must see the ticket.
        for item in fresh:
            fact = facts[id(item)]
            event = item.event
            fact["windows"] = windows.observe(
                event.event_type, event.partition_key, event.occurred_at, fact
            )
    out: list[Decided] = []
    for event_type, items in by_type.items():
        batch_facts = [facts[id(i)] for i in items]
        outcomes = rules.evaluate(event_type, batch_facts)
        result = scored[event_type]
        untrained = _untrained(event_type, (declared_models or {}).get(event_type, ()), result)
        explanations = (
            [{**untrained, **e} for e in result.explanations] if untrained else result.explanations
        )
        decisions = assemble_decisions(
            items,
            [f["scores"] for f in batch_facts],
            outcomes,
            explanations=explanations,
            model_versions={event_type: result.versions},
            decisions_topic={event_type: decisions_topic(event_type)},
            received_at=received_at,
            decided_at=utcnow(),
        )
        out.extend(
            Decided(decision, item, shadow)
            for decision, item, shadow in zip(decisions, items, result.shadow, strict=True)
        )
    return out


def _untrained(
    event_type: str, models: Sequence[str], result: ScoredBatch
) -> dict[str, dict[str, Any]]:
    """An explanation for each declared model of ``event_type`` with no version in service."""
    missing = [f"{event_type}.{m}" for m in models if f"{event_type}.{m}" not in result.versions]
    return {
        name: {
            "method": "not_trained",
            "detail": f"{name} has no trained version yet, so scores.{name.split('.', 1)[1]} "
            "is missing; the trainer trains it once enough outcomes have arrived",
        }
        for name in missing
    }
