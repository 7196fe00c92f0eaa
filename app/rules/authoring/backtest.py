"""Backtest candidate rules against history, the pure part: replay and compare.

``arbiter rules backtest`` replays the events the ledger holds, oldest first, through
*candidate* rules with the scores stored with each event (the models as they scored it
then) and compares what the candidate rules decide with what was decided. Correlation
windows are rebuilt from the same history in a fresh ``WindowStore``: the events of the
longest window before ``since`` are fed first (seeding, not compared), so the first
compared events see the window values they would have seen.

Two layers here, both testable without a database:

- ``Comparison`` / ``compare``: stored events + new ``RuleResult``s → ``BacktestReport``
  (counts per old→new decision, rules that fired more/less, samples per change).
- ``Replay``: the candidate rules and their windows: events → ``RuleResult``s.

The I/O shell that reads the ledger read-only and drives these, ``run_backtest``, is in
``app.ops.backtest``.

Outcomes (was it really fraud?) are not stored yet; ``BacktestReport.outcomes`` stays
None until they are, and ``OutcomeEffect`` is the shape the counts will take.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.rules.language.spec import RuleSet
from app.rules.runtime.engine import RulesEngine
from app.rules.runtime.result import RuleResult
from app.rules.windows.spec import WindowSpec
from app.rules.windows.store import WindowStore
from app.values import DecidedEvent

__all__ = [
    "BacktestReport",
    "ChangeSample",
    "Comparison",
    "OutcomeEffect",
    "Replay",
    "RuleShift",
    "TypeReport",
    "compare",
]

# --- the report (pure values) ----------------------------------------------------------


@dataclass(frozen=True)
class ChangeSample:
    """One event whose decision changed: what fired before and now, and why now."""

    event_id: str
    occurred_at: datetime
    old_decision: str
    new_decision: str
    old_rules_fired: tuple[str, ...]
    new_rules_fired: tuple[str, ...]
    new_reasons: tuple[str, ...]


@dataclass(frozen=True)
class RuleShift:
    """How often one rule fired on the replayed events, then and with the candidate rules."""

    rule: str
    old: int
    new: int

    @property
    def delta(self) -> int:
        return self.new - self.old


@dataclass(frozen=True)
class OutcomeEffect:
    """Effect on events with a known outcome (e.g. confirmed fraud). Filled once outcomes
    are recorded; ``caught``/``missed`` count known-bad events the candidate rules would
    stop / let through, ``newly_*`` those where that differs from the stored decision."""

    known: int = 0
    caught: int = 0
    missed: int = 0
    newly_caught: int = 0
    newly_missed: int = 0


@dataclass(frozen=True)
class TypeReport:
    """The comparison for one event type."""

    event_type: str
    events: int
    transitions: Mapping[tuple[str, str], int]  # (old, new) -> events
    rule_shifts: tuple[RuleShift, ...]  # only rules whose count changed, largest change first
    samples: Mapping[tuple[str, str], tuple[ChangeSample, ...]]  # changed pairs only
    outcomes: OutcomeEffect | None = None

    @property
    def changed(self) -> int:
        return sum(n for (old, new), n in self.transitions.items() if old != new)


@dataclass(frozen=True)
class BacktestReport:
    """Everything ``arbiter rules backtest`` prints. ``seeded`` events (before ``since``)
    only fed the windows; ``skipped`` ones had no candidate ruleset or were filtered out."""

    since: datetime | None
    until: datetime | None
    by_type: tuple[TypeReport, ...]
    seeded: int = 0
    skipped: int = 0
    candidate_versions: Mapping[str, str] = field(default_factory=dict)
    outcomes: OutcomeEffect | None = None

    @property
    def events(self) -> int:
        return sum(t.events for t in self.by_type)

    @property
    def changed(self) -> int:
        return sum(t.changed for t in self.by_type)


# --- the comparison (pure) -------------------------------------------------------------


def event_id_of(event: DecidedEvent) -> str:
    """The stored event's id (``DecidedEvent`` keeps it inside the payload)."""
    value = event.payload.get("event_id")
    return str(value) if value is not None else "?"


@dataclass
class _TypeTally:
    events: int = 0
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    old_fired: Counter[str] = field(default_factory=Counter)
    new_fired: Counter[str] = field(default_factory=Counter)
    samples: dict[tuple[str, str], list[ChangeSample]] = field(default_factory=dict)


class Comparison:
    """Accumulates old-vs-new page by page, so memory does not grow with history (only
    the counters and at most ``samples`` events per changed old→new pair are kept)."""

    def __init__(self, *, samples: int = 3) -> None:
        if samples < 0:
            raise ValueError(f"samples must be >= 0, got {samples}")
        self._samples = samples
        self._types: dict[str, _TypeTally] = {}

    def add(self, events: Sequence[DecidedEvent], results: Sequence[RuleResult]) -> None:
        """Compare each stored event with the candidate result at the same position."""
        if len(events) != len(results):
            raise ValueError(f"{len(events)} events but {len(results)} results")
        for event, result in zip(events, results, strict=True):
            tally = self._types.setdefault(event.event_type, _TypeTally())
            tally.events += 1
            pair = (event.decision, result.decision)
            tally.transitions[pair] += 1
            tally.old_fired.update(event.rules_fired)
            tally.new_fired.update(result.rules_fired)
            if pair[0] != pair[1]:
                kept = tally.samples.setdefault(pair, [])
                if len(kept) < self._samples:
                    kept.append(
                        ChangeSample(
                            event_id=event_id_of(event),
                            occurred_at=event.occurred_at,
                            old_decision=event.decision,
                            new_decision=result.decision,
                            old_rules_fired=tuple(event.rules_fired),
                            new_rules_fired=result.rules_fired,
                            new_reasons=result.reasons,
                        )
                    )

    def report(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        seeded: int = 0,
        skipped: int = 0,
        candidate_versions: Mapping[str, str] | None = None,
    ) -> BacktestReport:
        by_type = []
        for event_type, tally in sorted(self._types.items()):
            rules = set(tally.old_fired) | set(tally.new_fired)
            shifts = [
                RuleShift(rule, tally.old_fired[rule], tally.new_fired[rule])
                for rule in rules
                if tally.old_fired[rule] != tally.new_fired[rule]
            ]
            shifts.sort(key=lambda s: (-abs(s.delta), s.rule))
            by_type.append(
                TypeReport(
                    event_type=event_type,
                    events=tally.events,
                    transitions=dict(sorted(tally.transitions.items())),
                    rule_shifts=tuple(shifts),
                    samples={p: tuple(s) for p, s in sorted(tally.samples.items())},
                )
            )
        return BacktestReport(
            since=since,
            until=until,
            by_type=tuple(by_type),
            seeded=seeded,
            skipped=skipped,
            candidate_versions=dict(candidate_versions or {}),
        )


def compare(
    events: Sequence[DecidedEvent], results: Sequence[RuleResult], *, samples: int = 3
) -> BacktestReport:
    """The report for stored ``events`` and the candidate ``results`` (same order)."""
    comparison = Comparison(samples=samples)
    comparison.add(events, results)
    return comparison.report()


# --- replaying through the candidate rules ---------------------------------------------


def _fact(event: DecidedEvent) -> dict[str, Any]:
    return {**event.payload, "scores": dict(event.scores or {})}


class Replay:
    """The candidate rules with a fresh ``WindowStore`` of their windows. Feed events in
    ``occurred_at`` order: ``seed`` (windows only) for the history before the backtest,
    then ``decide`` for the events to compare. ``close()`` frees the rules engine."""

    def __init__(self, rulesets: Mapping[str, RuleSet]) -> None:
        self.rulesets = dict(rulesets)
        specs: list[WindowSpec] = [w for rs in self.rulesets.values() for w in rs.windows]
        self._windows = WindowStore(specs)
        self._engine = RulesEngine(self.rulesets)

    @property
    def horizon(self) -> timedelta:
        """How much history before ``since`` the windows need."""
        return timedelta(seconds=self._windows.horizon_s)

    def seed(self, events: Iterable[DecidedEvent]) -> int:
        """Feed the windows without deciding; returns how many events were fed."""
        return self._windows.replay(
            (e.event_type, e.partition_key, e.occurred_at, _fact(e)) for e in events
        )

    def decide(self, events: Sequence[DecidedEvent]) -> list[RuleResult | None]:
        """The candidate result per event (None for a type without candidate rules);
        every event also feeds the windows, in order."""
        facts: list[tuple[int, str, dict[str, Any]]] = []
        for index, event in enumerate(events):
            fact = _fact(event)
            windows = self._windows.observe_and_read(
                event.event_type, event.partition_key, event.occurred_at, fact
            )
            if event.event_type in self.rulesets:
                facts.append((index, event.event_type, {**fact, "windows": windows}))
        out: list[RuleResult | None] = [None] * len(events)
        by_type: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for index, event_type, fact in facts:
            by_type.setdefault(event_type, []).append((index, fact))
        for event_type, items in by_type.items():
            results = self._engine.evaluate(event_type, [f for _, f in items])
            for (index, _), result in zip(items, results, strict=True):
                out[index] = result
        return out

    def close(self) -> None:
        self._engine.close()
