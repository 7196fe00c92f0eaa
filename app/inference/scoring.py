"""The scorer: every model of an event type on one batch, champions and shadows.

Champions write the event's ``scores`` (what the rules read) and an explanation each;
challengers in shadow score the same batch and their output is kept apart under
``shadow`` ("name@vN" -> scores), so a shadow never changes a decision — and a shadow
that fails is logged and skipped, never failing the batch.

A ``Scorer`` is immutable once built: a promotion builds a new one (``with_models``)
that the processor swaps in between batches. Per-type feature state (a customer's
recent amounts) carries over from the old one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from app.inference.base import BatchContext, Score, Served
from schemas import EventCore

log = structlog.get_logger("arbiter.scoring")


def event_type_of(name: str) -> str:
    """Model names are ``<event type>.<model>``."""
    return name.split(".", 1)[0]


@dataclass(frozen=True)
class ScoredBatch:
    scores: list[dict[str, Score]]
    explanations: list[dict[str, dict[str, Any]]]  # model name -> explanation
    shadow: list[dict[str, dict[str, Score]]]  # "name@vN" -> that version's scores
    versions: dict[str, str]  # model name -> "vN" of the champion


def warm_up(served: Served) -> None:
    """Score once before the model serves, so first-call costs (thread pools, lazy
    loads, the text encoder) are not paid on a live batch: a tabular model its own
    reference row, a text model a made-up text. No customer history is touched."""
    served.warm_up()


class Scorer:
    """Scores a batch of one event type with every model in service for that type."""

    def __init__(
        self,
        champions: Mapping[str, Served],
        shadows: Mapping[str, Sequence[Served]] | None = None,
        *,
        state: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.champions = dict(champions)
        self.shadows = {n: tuple(s) for n, s in (shadows or {}).items() if s}
        self._state: dict[str, dict[str, Any]] = state if state is not None else {}
        self._by_type: dict[str, list[str]] = {}
        for name in sorted(self.champions):
            self._by_type.setdefault(event_type_of(name), []).append(name)
        self._shadow_failures: set[str] = set()

    def with_models(
        self, champions: Mapping[str, Served], shadows: Mapping[str, Sequence[Served]]
    ) -> Scorer:
        """A new scorer with other model versions and this one's feature state."""
        return Scorer(champions, shadows, state=self._state)

    def warm_up(self) -> None:
        for served in self.champions.values():
            warm_up(served)
        for shadows in self.shadows.values():
            for served in shadows:
                warm_up(served)

    def recent_fields(self, event_type: str) -> tuple[str, ...]:
        """The fields whose recent values a champion of this type compares an event with
        (``vs_recent_mean``): the history a restart replays."""
        found: dict[str, None] = {}
        for name in self._by_type.get(event_type, []):
            found.update(dict.fromkeys(self.champions[name].recent_fields))
        return tuple(found)

    def keeps_history(self, event_type: str) -> bool:
        """Whether a model of this type reads the key's earlier events."""
        return bool(self.recent_fields(event_type))

    def remember(self, event_type: str, events: Sequence[EventCore]) -> None:
        """Add already-decided events to the type's feature history (a restart's replay)."""
        from app.inference.tabular import remember

        fields = self.recent_fields(event_type)
        if fields:
            remember(self._state.setdefault(event_type, {}), events, fields)

    def uses_text(self, event_type: str) -> bool:
        """Whether a text model scores this type (it then scores on its own thread)."""
        return any(
            self.champions[n].meta.family == "text" for n in self._by_type.get(event_type, [])
        )

    def versions(self, event_type: str) -> dict[str, str]:
        return {n: self.champions[n].meta.tag for n in self._by_type.get(event_type, [])}

    def in_service(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """(champion version, shadow versions) per model name."""
        return {
            name: (served.meta.version, tuple(s.meta.version for s in self.shadows.get(name, ())))
            for name, served in sorted(self.champions.items())
        }

    def score(self, event_type: str, events: Sequence[EventCore]) -> list[dict[str, Score]]:
        return self.score_batch(event_type, events).scores

    def score_batch(self, event_type: str, events: Sequence[EventCore]) -> ScoredBatch:
        n = len(events)
        scores: list[dict[str, Score]] = [{} for _ in range(n)]
        explanations: list[dict[str, dict[str, Any]]] = [{} for _ in range(n)]
        shadow: list[dict[str, dict[str, Score]]] = [{} for _ in range(n)]
        names = self._by_type.get(event_type, [])
        if not events or not names:
            return ScoredBatch(scores, explanations, shadow, self.versions(event_type))
        ctx = BatchContext(event_type, events, self._state.setdefault(event_type, {}))
        for name in names:
            predictions = self.champions[name].predict(ctx)
            for i, p in enumerate(predictions):
                scores[i].update(p.scores)
                explanations[i][name] = p.explanation
        for name in names:
            for served in self.shadows.get(name, ()):
                key = f"{name}@{served.meta.tag}"
                try:
                    predictions = served.predict(ctx)
                except Exception as exc:  # a shadow must never fail the batch
                    if key not in self._shadow_failures:
                        self._shadow_failures.add(key)
                        log.error("shadow model failed; skipping it", model=key, error=str(exc))
                    continue
                for i, p in enumerate(predictions):
                    shadow[i][key] = dict(p.scores)
        return ScoredBatch(scores, explanations, shadow, self.versions(event_type))
