"""The models the hot path serves, kept in step with the registry: the I/O shell
between ``app.store.registry`` and the pure ``app.inference`` scorer.

- ``load_in_service``: at start-up, every champion (must load) and shadow (may be
  refused) the registry names, each verified against the registry's checksums and
  loaded with its family's loader (``app.inference.loading.load_served``); anything
  wrong is a ``ConfigError`` naming the file.
- ``ModelWatcher``: polled by the consume loop between batches. When the registry's
  champions or shadows change, it loads the new versions off the event loop and hands
  back a new ``Scorer``; a version that fails to load is refused (logged and recorded
  once) and what serves keeps serving.
- ``replay_history``: after a restart, the ledger's recently decided events feed the
  scorer's feature history, so features that look back mean what they meant before.

First champions are the trainer's business (``app.trainer.bootstrap``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import structlog

from app.errors import ConfigError
from app.inference.base import Served
from app.inference.loading import load_served
from app.inference.scoring import Scorer, warm_up
from app.store.ledger import Ledger
from app.store.registry import InService, ModelRecord, ModelRegistry
from schemas import EventCore

log = structlog.get_logger("arbiter.models")


async def load_in_service(
    registry: ModelRegistry, models_dir: Path
) -> tuple[Scorer, dict[str, InService]]:
    """Load every champion (must succeed) and shadow (may be refused) in the registry."""
    wanted = await registry.in_service()
    loop = asyncio.get_running_loop()
    champions: dict[str, Served] = {}
    shadows: dict[str, list[Served]] = {}
    for name, plan in sorted(wanted.items()):
        if plan.champion is not None:
            record = await _record(registry, name, plan.champion)
            champions[name] = await loop.run_in_executor(None, load_served, models_dir, record.meta)
        for version in plan.shadows:
            record = await _record(registry, name, version)
            try:
                served = await loop.run_in_executor(None, load_served, models_dir, record.meta)
            except ConfigError as exc:
                log.error("shadow model refused", model=f"{name}@v{version}", error=str(exc))
                continue
            shadows.setdefault(name, []).append(served)
    return Scorer(champions, shadows), wanted


async def _record(registry: ModelRegistry, name: str, version: int) -> ModelRecord:
    record = await registry.get(name, version)
    if record is None:
        raise ConfigError(f"{name} v{version} vanished from the registry while loading")
    return record


class ModelWatcher:
    """Between batches: follow the registry and build a new scorer when it changes."""

    def __init__(
        self,
        registry: ModelRegistry,
        models_dir: Path,
        scorer: Scorer,
        *,
        interval_s: float,
    ) -> None:
        self._registry = registry
        self._models_dir = models_dir
        self._interval_s = interval_s
        self._next = time.monotonic() + interval_s
        self._loaded: dict[tuple[str, int], Served] = {}
        for name, served in scorer.champions.items():
            self._loaded[(name, served.meta.version)] = served
        for name, shadows in scorer.shadows.items():
            for served in shadows:
                self._loaded[(name, served.meta.version)] = served
        self._refused: set[tuple[str, int]] = set()

    async def poll(self, scorer: Scorer, *, force: bool = False) -> Scorer | None:
        """A new scorer if the registry asks for other versions than ``scorer`` serves."""
        now = time.monotonic()
        if not force and now < self._next:
            return None
        self._next = now + self._interval_s
        wanted = await self._registry.in_service()
        champions = dict(scorer.champions)
        shadows: dict[str, list[Served]] = {}
        for name, plan in wanted.items():
            current = champions.get(name)
            if plan.champion is not None and (
                current is None or current.meta.version != plan.champion
            ):
                served = await self._load(name, plan.champion)
                if served is not None:
                    champions[name] = served
            for version in plan.shadows:
                served = await self._load(name, version)
                if served is not None:
                    shadows.setdefault(name, []).append(served)
        candidate = scorer.with_models(champions, shadows)
        serving = candidate.in_service()
        # Forget versions that left service, so memory does not grow with history.
        keep = {(n, v) for n, (c, sh) in serving.items() for v in (c, *sh)}
        self._loaded = {k: m for k, m in self._loaded.items() if k in keep}
        if serving == scorer.in_service():
            return None
        for name, (version, shadow_versions) in candidate.in_service().items():
            log.info(
                "models swapped in",
                model=name,
                champion=f"v{version}",
                shadows=[f"v{v}" for v in shadow_versions],
            )
        return candidate

    async def _load(self, name: str, version: int) -> Served | None:
        key = (name, version)
        if key in self._loaded:
            return self._loaded[key]
        if key in self._refused:
            return None
        try:
            record = await _record(self._registry, name, version)
            served = await asyncio.get_running_loop().run_in_executor(
                None, load_served, self._models_dir, record.meta
            )
            await asyncio.get_running_loop().run_in_executor(None, warm_up, served)
        except ConfigError as exc:
            self._refused.add(key)
            log.error(
                "model version refused; the version in service keeps serving",
                model=f"{name}@v{version}",
                error=str(exc),
            )
            await self._registry.record_event(name, version, "refused", str(exc)[:500])
            return None
        self._loaded[key] = served
        return served


async def replay_history(
    ledger: Ledger,
    scorer: Scorer,
    *,
    lookback: timedelta,
    event_models: Mapping[str, type[EventCore]],
) -> int:
    """Feed the decided events of the last ``lookback`` (before the newest) to the scorer's
    feature history, oldest first, so features that look at a customer's earlier events
    mean after a restart what they meant before it. Returns how many were replayed."""
    newest = await ledger.latest_occurred_at()
    if newest is None or lookback <= timedelta(0):
        return 0
    loop = asyncio.get_running_loop()
    fed = 0
    async for page in ledger.decided_events(newest - lookback):
        by_type: dict[str, list[EventCore]] = {}
        for stored in page:
            model = event_models.get(stored.event_type)
            if model is not None and scorer.keeps_history(stored.event_type):
                by_type.setdefault(stored.event_type, []).append(
                    model.model_validate(stored.payload)
                )
        for event_type, events in by_type.items():
            await loop.run_in_executor(None, scorer.remember, event_type, events)
            fed += len(events)
    return fed
