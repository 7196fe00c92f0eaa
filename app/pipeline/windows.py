"""Correlation state for the rules: the ``WindowStore`` and its life cycle in the service.

The ledger is the source of truth. Window state is derived from it and rebuilt:
- at start-up (replay of the decided events within the longest window),
- after a failed batch (the failed batch's events may already have been counted, and
  its retry must not count them twice), and
- for windows added by a rule reload (only those are seeded; kept windows keep state).

Feeding happens on the decide worker thread; rebuilds read the ledger on the event loop
and replay each page on the worker, so the store is only ever touched by that thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from datetime import timedelta
from typing import Any

import structlog

from app.rules.language.spec import RuleSet
from app.rules.windows.spec import WindowSpec
from app.rules.windows.store import WindowStore
from app.store.ledger import Ledger
from app.values import DecidedEvent

log = structlog.get_logger("arbiter.correlation")

StoredEvent = tuple[str, str, Any, Mapping[str, Any]]


def window_specs(rulesets: Mapping[str, RuleSet]) -> list[WindowSpec]:
    return [spec for ruleset in rulesets.values() for spec in ruleset.windows]


def _as_replay(page: Iterable[DecidedEvent]) -> list[StoredEvent]:
    return [
        (e.event_type, e.partition_key, e.occurred_at, {**e.payload, "scores": e.scores})
        for e in page
    ]


class Correlator:
    def __init__(self, specs: Sequence[WindowSpec], ledger: Ledger, worker: Executor) -> None:
        self._store = WindowStore(specs)
        self._ledger = ledger
        self._worker = worker
        self.dirty = bool(specs)  # nothing counted yet: rebuild before the first batch

    @property
    def active(self) -> bool:
        return bool(self._store.specs)

    def observe(
        self, event_type: str, key: str, at: Any, fact: Mapping[str, Any]
    ) -> dict[str, float]:
        """Count this event and read the windows its rules use (decide thread only)."""
        return self._store.observe_and_read(event_type, key, at, fact)

    async def rebuild(self) -> int:
        """Start from empty and replay the ledger's events within the longest window."""
        specs = list(self._store.specs)
        self._store = WindowStore(specs)
        fed = await self._replay(None)
        self.dirty = False
        log.info("correlation windows rebuilt from the ledger", events=fed, windows=len(specs))
        return fed

    async def reconfigure(self, specs: Sequence[WindowSpec]) -> None:
        """Keep the state of unchanged windows, drop removed ones, seed new ones."""
        loop = asyncio.get_running_loop()
        new = await loop.run_in_executor(self._worker, self._store.reconfigure, list(specs))
        if new and not self.dirty:
            fed = await self._replay(new)
            log.info("new correlation windows seeded", windows=[s.name for s in new], events=fed)

    async def _replay(self, only: Sequence[WindowSpec] | None) -> int:
        horizon = self._store.horizon_s
        if horizon <= 0:
            return 0
        newest = await self._ledger.latest_occurred_at()
        if newest is None:
            return 0
        loop = asyncio.get_running_loop()
        fed = 0
        replay: Callable[[list[StoredEvent]], int] = (
            self._store.replay if only is None else lambda ev: self._store.replay(ev, only=only)
        )
        async for page in self._ledger.decided_events(newest - timedelta(seconds=horizon)):
            fed += await loop.run_in_executor(self._worker, replay, _as_replay(page))
        return fed
