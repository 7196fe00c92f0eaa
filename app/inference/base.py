"""The contract every model family keeps: how a trained model is described, written,
loaded and asked for scores, so the registry and the scorer never care which family
(tabular scikit-learn pipeline, text encoder + head) a model belongs to.

- ``Fitted``: a model just trained, not yet on disk. ``write(folder)`` puts its files
  in a fresh version folder; the registry checksums every file it wrote.
- ``Served``: a model loaded for scoring. ``predict(ctx)`` returns one ``Prediction``
  per event of the batch. Work shared by several models of one type (feature rows,
  text embeddings) goes through ``ctx.memo`` so a champion and its shadow pay it once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from app.values import ModelMeta
from schemas import EventCore

Score = float | str
T = TypeVar("T")


@dataclass(frozen=True)
class Prediction:
    """One model's output for one event.

    ``scores``: the keys this model adds to the event's scores, e.g. ``{"fraud": 0.93}``
    or ``{"category": "billing", "category_confidence": 0.91}``.
    ``explanation``: ``{"method": str, "top": [[feature, contribution], ...]}``, largest
    absolute contribution first (at most ``TOP_CONTRIBUTIONS`` entries); contributions are
    in the model's decision units (log-odds for a binary model, the winning class's
    logit for a multiclass one) and ``method`` says how they were obtained.
    """

    scores: dict[str, Score]
    explanation: dict[str, Any]


TOP_CONTRIBUTIONS = 3


class BatchContext:
    """One event type's batch as every model of that type sees it, with a memo for work
    the models share. Used from one thread at a time per batch.

    ``state`` outlives the batch: the scorer keeps one dict per event type for features
    that depend on earlier events (a customer's recent average amount). It is only
    touched inside a ``memo`` computation, so a champion and its shadow update it once.
    """

    def __init__(
        self,
        event_type: str,
        events: Sequence[EventCore],
        state: dict[str, Any] | None = None,
    ) -> None:
        self.event_type = event_type
        self.events = events
        self.state: dict[str, Any] = {} if state is None else state
        self._memo: dict[str, Any] = {}
        self._lock = threading.Lock()

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._memo:
                self._memo[key] = compute()
            value: T = self._memo[key]
            return value


class Fitted(Protocol):
    """A freshly trained model: its description (without name/version) and its files."""

    @property
    def family(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def features(self) -> tuple[str, ...]: ...
    @property
    def metrics(self) -> dict[str, float]: ...
    @property
    def classes(self) -> tuple[str, ...]: ...
    @property
    def params(self) -> dict[str, Any]: ...

    def write(self, folder: Path) -> list[str]:
        """Write the artifact files into ``folder`` (exists, empty); return their names."""
        ...


class Served(Protocol):
    """A loaded model version, ready to score batches of its event type."""

    meta: ModelMeta

    @property
    def recent_fields(self) -> tuple[str, ...]:
        """Fields whose recent values per key a feature compares with (the history a
        restart replays); empty for a model that reads no earlier events."""
        ...

    def predict(self, ctx: BatchContext) -> list[Prediction]: ...

    def warm_up(self) -> None:
        """Score once, before serving, so first-call costs are not paid live."""
        ...
