"""What ``arbiter models …`` and ``arbiter explain`` do, as plain async functions.

Each opens the store named by the settings, checks it is migrated, does one thing and
returns plain data for the CLI to print. Promotion verifies the version's files first:
a version whose artifact is corrupt is refused here, before a consumer ever tries it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.errors import ConfigError
from app.inference.loading import load_served
from app.settings import Settings
from app.store.ledger import Ledger
from app.store.migrate import open_migrated
from app.store.registry import ModelEvent, ModelRecord, ModelRegistry
from app.store.training import TrainingRun, TrainingStore
from app.trainer.monitor import DriftStatus
from app.values import DecisionRecord


@contextlib.asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[tuple[ModelRegistry, Ledger]]:
    async with open_migrated(settings.resolved_database_url) as engine:
        yield ModelRegistry(engine), Ledger(engine)


async def list_models(settings: Settings, name: str | None = None) -> list[ModelRecord]:
    async with _store(settings) as (registry, _):
        return await registry.versions(name)


@dataclass(frozen=True)
class ModelDetail:
    versions: list[ModelRecord]
    events: list[ModelEvent]
    artifacts_dir: str
    runs: list[TrainingRun]  # newest first: the experiment history
    drift: DriftStatus


async def show_model(settings: Settings, name: str) -> ModelDetail:
    from app.declarations import served_by
    from app.trainer.monitor import measure
    from app.trainer.service import drift_limits

    declared = served_by(settings).catalog().get(name)

    async with open_migrated(settings.resolved_database_url) as engine:
        registry = ModelRegistry(engine)
        versions = await registry.versions(name)
        if not versions:
            known = sorted({r.name for r in await registry.versions()})
            raise ConfigError(f"no model called {name!r}; registered: {', '.join(known) or 'none'}")
        events = await registry.events(name)
        runs = await TrainingStore(engine).runs(name, limit=10)
        drift = await measure(engine, registry, name, drift_limits(settings), declared)
    return ModelDetail(versions, events, str(settings.resolved_models_dir / name), runs, drift)


async def _verified(settings: Settings, record: ModelRecord) -> None:
    """Refuse a version whose files are missing, changed or do not load."""
    await asyncio.get_running_loop().run_in_executor(
        None, load_served, settings.resolved_models_dir, record.meta
    )


async def promote(settings: Settings, name: str, version: int) -> ModelRecord:
    async with _store(settings) as (registry, _):
        record = await registry.get(name, version)
        if record is None:
            known = ", ".join(r.meta.tag for r in await registry.versions(name)) or "none"
            raise ConfigError(f"{name} v{version} is not registered (versions: {known})")
        try:
            await _verified(settings, record)
        except ConfigError as exc:
            await registry.record_event(name, version, "refused", str(exc)[:500])
            raise ConfigError(f"not promoting {name} v{version}: {exc}") from exc
        return await registry.promote(name, version, detail="arbiter models promote")


async def rollback(settings: Settings, name: str) -> tuple[ModelRecord, ModelRecord]:
    async with _store(settings) as (registry, _):
        return await registry.rollback(name)


async def shadow(settings: Settings, name: str, version: int, on: bool) -> ModelRecord:
    async with _store(settings) as (registry, _):
        record = await registry.get(name, version)
        if record is not None and on:
            await _verified(settings, record)
        return await registry.set_shadow(name, version, on)


@dataclass(frozen=True)
class Explained:
    decision: DecisionRecord
    word_explanations: dict[str, dict[str, Any]]  # text model -> word occlusion


async def explain(settings: Settings, event_id: str) -> Explained:
    """The logged decision of ``event_id`` with its reasons; for text models, which
    words moved the label (word occlusion, computed now with the version that scored it)."""
    async with _store(settings) as (registry, ledger):
        found = await ledger.find_decisions([event_id])
        if event_id not in found:
            raise ConfigError(
                f"no decision is logged for event_id {event_id!r}: check the id "
                "(or whether it was dead-lettered: it then has no decision)"
            )
        record = found[event_id].record
        words: dict[str, dict[str, Any]] = {}
        for name, tag in sorted(record.model_versions.items()):
            model = await registry.get(name, int(str(tag).lstrip("v") or 0))
            if model is None or model.meta.family != "text":
                continue
            words[name] = await asyncio.get_running_loop().run_in_executor(
                None, _explain_words, settings, model, record.payload
            )
    return Explained(record, words)


def _explain_words(
    settings: Settings, model: ModelRecord, payload: dict[str, Any]
) -> dict[str, Any]:
    from app.declarations import served_by
    from app.inference import text

    event_type = model.meta.name.split(".", 1)[0]
    try:
        served = load_served(settings.resolved_models_dir, model.meta)
        decoder = served_by(settings).models[event_type]
    except (ConfigError, KeyError) as exc:
        return {"method": "word-occlusion", "error": str(exc), "top": []}
    assert isinstance(served, text.ServedText)
    return text.explain_words(served, decoder.model_validate(payload))
