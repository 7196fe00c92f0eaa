"""One batch through the real models and rules with nothing else: no broker, no ledger.

``run_batch`` is what the consume loop does to a batch, minus the I/O: decode and
validate, keep the first copy of each event, decide, and list the messages that would be
published, in order. Users replay real batches with it, tests check the decision logic
with it, and it answers "what would Arbiter say to these events?" offline::

    types = served_by(Settings())  # the declared event types
    scorer = scorer_from_folder(Path("data/models"))
    rulesets = load_rulesets(Path("rules"), *rule_vocabulary(Settings(), types))
    out = run_batch(
        as_records("transaction", [raw_json, ...]),
        scorer=scorer,
        rules=RulesEngine(rulesets),
        event_models=types.models,
        windows=InMemoryWindows(rulesets),
    )
    for decision in out.decisions: ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.core.decide import Decided, Rules, Scores, Windows, decide_batch
from app.core.publish import TopicFor, dead_letter_message, owed_messages
from app.core.stages import (
    Rejected,
    decode_batch,
    decode_outcomes,
    first_of_each_event,
    utcnow,
)
from app.rules.language.spec import RuleSet
from app.rules.windows.store import WindowStore
from app.values import InRecord, OutMessage
from schemas import Decision, EventCore, Outcome

DEFAULT_MAX_EVENT_BYTES = 64 * 1024


def default_topic(kind: str, event_type: str) -> str:
    """``<kind>.<type>``: the topic names with no prefix."""
    return f"{kind}.{event_type}"


@dataclass(frozen=True)
class BatchOutput:
    """What one batch comes to: new decisions (grouped by type, record order within a
    type), rejects with their reasons, the outcomes it carried, the repeated copies it
    skipped, and the messages it would publish, in publish order."""

    decided: list[Decided]
    rejected: list[Rejected]
    outcomes: list[Outcome]
    repeats: int
    messages: list[OutMessage]

    @property
    def decisions(self) -> list[Decision]:
        return [d.decision for d in self.decided]


class InMemoryWindows:
    """The correlation windows of ``rulesets``, starting empty and counting what they are
    shown (the service rebuilds its windows from the ledger instead)."""

    def __init__(self, rulesets: Mapping[str, RuleSet]) -> None:
        self._store = WindowStore([spec for rs in rulesets.values() for spec in rs.windows])

    @property
    def active(self) -> bool:
        return bool(self._store.specs)

    def observe(
        self, event_type: str, key: str, at: Any, fact: Mapping[str, Any]
    ) -> dict[str, float]:
        return self._store.observe_and_read(event_type, key, at, fact)


def as_records(
    event_type: str, values: Iterable[bytes | str], *, kind: str = "events"
) -> list[InRecord]:
    """Raw event bodies as the records of one made-up partition (offsets 0, 1, ...)."""
    now_ms = int(utcnow().timestamp() * 1000)
    return [
        InRecord(
            event_type=event_type,
            topic=default_topic(kind, event_type),
            partition=0,
            offset=offset,
            key=None,
            value=value.encode() if isinstance(value, str) else value,
            timestamp_ms=now_ms,
            kind=kind,
        )
        for offset, value in enumerate(values)
    ]


def run_batch(
    records: Sequence[InRecord],
    *,
    scorer: Scores,
    rules: Rules,
    event_models: Mapping[str, type[EventCore]],
    windows: Windows | None = None,
    topic_for: TopicFor = default_topic,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    received_at: datetime | None = None,
) -> BatchOutput:
    """Decide one batch as if nothing had been decided before; see the module docstring."""
    received_at = received_at or utcnow()
    events = [r for r in records if r.kind != "outcomes"]
    valid, rejected = decode_batch(events, max_bytes=max_event_bytes, models=event_models)
    outcomes, bad_outcomes = decode_outcomes(
        [r for r in records if r.kind == "outcomes"], max_bytes=max_event_bytes
    )
    rejected += bad_outcomes
    first, repeats = first_of_each_event(valid)
    decided = decide_batch(
        first,
        scorer=scorer,
        rules=rules,
        windows=windows,
        decisions_topic=lambda t: topic_for("decisions", t),
        received_at=received_at,
    )
    messages, _ = owed_messages(
        first, {d.decision.event_id: d.decision for d in decided}, topic_for
    )
    messages += [dead_letter_message(r, topic_for) for r in rejected]
    return BatchOutput(decided, rejected, outcomes, len(repeats), messages)
