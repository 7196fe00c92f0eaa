"""First champions at start-up: every served model the simulator can train gets one
before the service scores anything (``arbiter run``, the demo, the tests' services).

``ensure_champions``: a name the registry has never seen adopts the complete versions
found in the models folder (a baked-in image, a shared volume, a test fixture); failing
that, version 1 is trained on simulator data with planted patterns
(``jobs.first.train_first``), written and registered as champion. The I/O shell around
the pure training: it reads and writes the registry; the service then loads what it
registered (``app.pipeline.models.load_in_service``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import structlog

from app.declarations.spec import DeclaredModel
from app.errors import ConfigError
from app.inference import artifacts
from app.store.registry import ModelRegistry, VersionExists
from app.trainer.jobs.first import can_train_first, train_first
from app.trainer.jobs.run import Progress
from app.values import ModelMeta

log = structlog.get_logger("arbiter.models")


async def ensure_champions(
    registry: ModelRegistry,
    models_dir: Path,
    catalog: Mapping[str, DeclaredModel],
    *,
    on_progress: Progress | None = None,
) -> None:
    """Give every model of ``catalog`` (the served types' declared models) whose type the
    simulator knows a champion: adopt from disk, else train v1. A model of another type
    waits for its own outcomes: the trainer trains it, and until then decisions say it
    is not trained yet."""
    say = on_progress or (lambda msg: log.info("models", step=msg))
    missing: list[DeclaredModel] = []
    for name, model in catalog.items():
        if not can_train_first(model):
            continue
        if await registry.champion(name) is not None:
            continue
        if await registry.versions(name):
            raise ConfigError(
                f"{name} has registered versions but no champion: promote one with "
                f"`arbiter models promote {name} N` (see `arbiter models list {name}`)"
            )
        if not await _adopt(registry, models_dir, name, say):
            missing.append(model)
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
