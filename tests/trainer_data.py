"""Builders for the trainer's tests: labelled simulator data as ledger rows and outcomes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from app.store.ledger import Ledger
from app.store.outcomes import OutcomeStore
from app.trainer.jobs.run import Limits, Record
from app.values import DecisionRecord
from schemas import EventBase, Outcome
from tests.shipped import CATALOG

# Small budgets keep each training run to seconds on 2 cores.
FAST = Limits(budget_s=6.0, estimators=("logreg", "hgb"), folds=3)


def records(events: Sequence[EventBase], labels: Sequence[Mapping[str, Any]]) -> tuple[Record, ...]:
    return tuple(
        Record(e.event_id, e.event_type, e.occurred_at, e.model_dump(mode="json"), dict(lb))
        for e, lb in zip(events, labels, strict=True)
    )


def decision_rows(
    events: Sequence[EventBase],
    *,
    model: str,
    version: str = "v1",
    scores: Sequence[float | str] | None = None,
    offset: int = 0,
) -> list[DecisionRecord]:
    key = model.split(".", 1)[1]
    out = []
    for i, e in enumerate(events):
        score: float | str = scores[i] if scores is not None else 0.5
        out.append(
            DecisionRecord(
                event_id=e.event_id,
                event_type=e.event_type,
                partition_key=e.partition_key,
                decision="approve",
                actions=[],
                scores={key: score},
                model_versions={model: version},
                rules_fired=[],
                reasons=[],
                payload=e.model_dump(mode="json"),
                latency_ms=1.0,
                occurred_at=e.occurred_at,
                decided_at=e.occurred_at,
                source_topic=f"events.{e.event_type}",
                source_partition=0,
                source_offset=offset + i,
            )
        )
    return out


def outcomes_of(events: Sequence[EventBase], labels: Sequence[Mapping[str, Any]]) -> list[Outcome]:
    return [
        Outcome(
            event_id=e.event_id,
            event_type=e.event_type,
            partition_key=e.partition_key,
            occurred_at=e.occurred_at + timedelta(hours=6),
            labels=dict(lb),
            source="test",
        )
        for e, lb in zip(events, labels, strict=True)
    ]


async def seed(
    ledger: Ledger,
    store: OutcomeStore,
    events: Sequence[EventBase],
    labels: Sequence[Mapping[str, Any]],
    *,
    model: str,
    version: str = "v1",
    scores: Sequence[float | str] | None = None,
    offset: int = 0,
    chunk: int = 1000,
) -> None:
    """Decisions for ``events`` in the ledger (as ``version`` scored them) and their
    outcomes in the outcome store, in chunks as the service writes them."""
    rows = decision_rows(events, model=model, version=version, scores=scores, offset=offset)
    found = outcomes_of(events, labels)
    for start in range(0, len(rows), chunk):
        await ledger.record(rows[start : start + chunk], [])
    for start in range(0, len(found), chunk):
        await store.record(found[start : start + chunk], found[0].occurred_at)


def scored_by(models_dir: Path, name: str, events: Sequence[EventBase]) -> list[float]:
    """What the newest version of ``name`` in ``models_dir`` scores ``events`` (so that the
    ledger holds the scores the champion really gave)."""
    from app.inference import artifacts, tabular
    from app.inference.loading import load_served

    meta = [m for m in artifacts.scan(models_dir) if m.name == name][-1]
    served = load_served(models_dir, meta)
    assert isinstance(served, tabular.ServedTabular)
    rows = tabular.rows_in_order(CATALOG[name], events)
    return [float(p) for p in served.proba(rows)]
