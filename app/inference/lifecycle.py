"""Models from registry to service: first models, loading with checks, and hot swap.

- ``ensure_champions``: at start-up every model name needs a champion. A name the
  registry has never seen adopts the complete versions found in the models folder (a
  baked-in image, a shared volume, a test fixture); failing that, version 1 is trained
  on simulator data with planted patterns, written and registered as champion.
- ``load_served``: verifies every file of a version against the registry's checksums
  and loads it with its family's loader; anything wrong is a ``ConfigError`` naming the
  file, and the version is refused.
- ``ModelWatcher``: polled by the consume loop between batches. When the registry's
  champions or shadows change, it loads the new versions off the event loop and hands
  back a new ``Scorer``; a version that fails to load is refused (logged and recorded
  once) and what serves keeps serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import structlog

from app.errors import ConfigError
from app.inference import artifacts
from app.inference.base import Served
from app.inference.catalog import MODELS
from app.inference.loading import load_served
from app.inference.scoring import Scorer, warm_up
from app.store.ledger import Ledger
from app.store.registry import InService, ModelRecord, ModelRegistry, VersionExists
from app.values import ModelMeta
from schemas import EVENT_MODELS, EventBase

log = structlog.get_logger("arbiter.models")

Progress = Callable[[str], None]


def train_first(
    models_dir: Path, names: list[str], *, on_progress: Progress
) -> dict[str, ModelMeta]:
    """Train version 1 of ``names`` on simulator data and write them (not registered)."""
    from app.inference import tabular, text
    from app.simulator.generate import training_set
    from app.trainer.job import Amended
    from app.trainer.job_tabular import first_references

    written: dict[str, ModelMeta] = {}
    for spec in tabular.SPECS:
        if spec.name not in names:
            continue
        on_progress(f"training {spec.name} on simulator data ({spec.train_size:,} events)")
        events, labels = training_set(spec.event_type, spec.train_size, seed=1)
        truth = [bool(lb[spec.label]) for lb in labels]
        fitted = tabular.fit(spec, events, truth)
        extra = first_references(fitted, events, truth)
        written[spec.name] = artifacts.write_version(
            models_dir,
            spec.name,
            Amended(fitted, fitted.metrics, extra),
            trained_on=f"simulator seed=1 n={spec.train_size}",
            window=fitted.window,
        )
    wanted_text = [s for s in text.SPECS if s.name in names]
    if wanted_text:
        on_progress(
            f"training the ticket text heads on simulator tickets ({text.TRAIN_SIZE:,}); "
            "comparing encoder variants"
        )
        events, labels = training_set("ticket", text.TRAIN_SIZE, seed=1)
        fitted_text = text.fit_all(events, labels, on_progress=on_progress)  # type: ignore[arg-type]
        for text_spec in wanted_text:
            head = fitted_text[text_spec.name]
            extra = first_references(head, events, [lb[text_spec.label] for lb in labels])
            written[text_spec.name] = artifacts.write_version(
                models_dir,
                text_spec.name,
                Amended(head, head.metrics, extra),
                trained_on=f"simulator seed=1 n={text.TRAIN_SIZE}",
                window=head.window,
            )
    return written


async def ensure_champions(
    registry: ModelRegistry, models_dir: Path, *, on_progress: Progress | None = None
) -> None:
    """Give every model in the catalog a champion: adopt from disk, else train v1."""
    say = on_progress or (lambda msg: log.info("models", step=msg))
    missing: list[str] = []
    for name in MODELS:
        if await registry.champion(name) is not None:
            continue
        if await registry.versions(name):
            raise ConfigError(
                f"{name} has registered versions but no champion: promote one with "
                f"`arbiter models promote {name} N` (see `arbiter models list {name}`)"
            )
        if not await _adopt(registry, models_dir, name, say):
            missing.append(name)
    if not missing:
        return
    loop = asyncio.get_running_loop()
    written = await loop.run_in_executor(
        None, lambda: train_first(models_dir, missing, on_progress=say)
    )
    for name, meta in written.items():
        try:
            await registry.register(
                meta, status="champion", detail="first model", only_if_no_champion=True
            )
        except VersionExists:
            # Another process trained and registered a first champion at the same moment:
            # theirs serves; ours is kept as a challenger.
            await registry.register(meta, detail="first model (another process won)")
            say(f"{name}: another process registered the first champion; using it")


async def _adopt(registry: ModelRegistry, models_dir: Path, name: str, say: Progress) -> bool:
    """Register the versions of ``name`` found on disk; the newest loadable one serves."""
    found = [m for m in artifacts.scan(models_dir) if m.name == name]
    if not found:
        return False
    champion: ModelMeta | None = None
    for meta in sorted(found, key=lambda m: m.version, reverse=True):
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, artifacts.verify, models_dir, meta
            )
        except ConfigError as exc:
            say(f"{name} {meta.tag} on disk is not usable: {exc}")
            continue
        champion = meta
        break
    if champion is None:
        return False
    for meta in found:
        status = "champion" if meta is champion else "challenger"
        try:
            await registry.register(meta, status=status, detail=f"adopted from {models_dir}")
        except VersionExists:
            continue
    say(f"{name}: adopted {len(found)} version(s) from {models_dir}, {champion.tag} serves")
    return True


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


async def replay_history(ledger: Ledger, scorer: Scorer, *, lookback: timedelta) -> int:
    """Feed the decided events of the last ``lookback`` (before the newest) to the scorer's
    feature history, oldest first, so features that look at a customer's earlier events
    mean after a restart what they meant before it. Returns how many were replayed."""
    newest = await ledger.latest_occurred_at()
    if newest is None or lookback <= timedelta(0):
        return 0
    loop = asyncio.get_running_loop()
    fed = 0
    async for page in ledger.decided_events(newest - lookback):
        by_type: dict[str, list[EventBase]] = {}
        for stored in page:
            if scorer.keeps_history(stored.event_type):
                model = EVENT_MODELS[stored.event_type]
                by_type.setdefault(stored.event_type, []).append(
                    model.model_validate(stored.payload)
                )
        for event_type, events in by_type.items():
            await loop.run_in_executor(None, scorer.remember, event_type, events)
            fed += len(events)
    return fed


def scorer_from_folder(models_dir: Path, *, on_progress: Progress | None = None) -> Scorer:
    """Without a registry (benchmarks, the README check): the newest version of every model
    in ``models_dir``, training version 1 of any that is missing."""
    say = on_progress or (lambda _msg: None)
    have = {m.name for m in artifacts.scan(models_dir)}
    missing = [name for name in MODELS if name not in have]
    if missing:
        train_first(models_dir, missing, on_progress=say)
    newest: dict[str, ModelMeta] = {}
    for meta in artifacts.scan(models_dir):
        newest[meta.name] = meta  # scan sorts by version: the last one wins
    return Scorer({name: load_served(models_dir, newest[name]) for name in MODELS})
