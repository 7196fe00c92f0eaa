"""The model registry and the artifact folder, against real SQLite and PostgreSQL and the
real first models: round trips, one champion per name, promote / rollback / shadow,
refusal of tampered artifacts, crash-safe writes and adoption of versions on disk."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ConfigError
from app.inference import artifacts
from app.inference.loading import load_served
from app.pipeline.models import load_in_service
from app.store.registry import ModelRegistry, VersionExists
from app.store.tables import model_versions
from app.trainer.bootstrap import ensure_champions
from app.values import ModelMeta
from tests.shipped import CATALOG, MODELS


@dataclass
class BytesFitted:
    """The smallest thing that keeps the ``Fitted`` contract: one file of given bytes."""

    content: bytes = b"weights"
    family: str = "tabular"
    kind: str = "binary"
    features: tuple[str, ...] = ("a", "b")
    metrics: dict[str, float] = field(default_factory=lambda: {"roc_auc": 0.9})
    classes: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    fail: bool = False

    def write(self, folder: Path) -> list[str]:
        (folder / "model.bin").write_bytes(self.content)
        if self.fail:
            raise RuntimeError("disk full while writing")
        return ["model.bin"]


def meta(name: str = "transaction.fraud", version: int = 1, **kw: Any) -> ModelMeta:
    fields: dict[str, Any] = {
        "name": name,
        "version": version,
        "family": "tabular",
        "kind": "binary",
        "features": ("amount", "country"),
        "metrics": {"roc_auc": 0.91},
        "created_at": "2026-11-30T12:00:00+00:00",
        "trained_on": "unit test",
        "window_start": "2026-01-01T00:00:00+00:00",
        "window_end": "2026-02-01T00:00:00+00:00",
        "params": {"estimator": "hgb"},
        "files": {"model.skops": "ab" * 32},
    }
    fields.update(kw)
    return ModelMeta(**fields)


@pytest.fixture
def registry(engine: AsyncEngine) -> ModelRegistry:
    return ModelRegistry(engine)


@pytest.fixture
def models_copy(trained_models: Path, tmp_path: Path) -> Path:
    """A private copy of the first models, so a test may add or damage versions."""
    target = tmp_path / "models"
    shutil.copytree(trained_models, target)
    return target


# --- registry rows --------------------------------------------------------------------


async def test_register_and_read_back_every_field(registry: ModelRegistry) -> None:
    """A registered version reads back with its window, features, metrics, files, params."""
    m = meta()
    record = await registry.register(m, status="champion")
    assert record.meta == m
    assert record.status == "champion"
    assert not record.shadow
    assert record.artifact_path == "transaction.fraud/v1"
    assert record.promoted_at is not None
    assert (await registry.champion("transaction.fraud")) == record


async def test_registering_a_version_twice_is_refused(registry: ModelRegistry) -> None:
    """(name, version) is unique: a second writer learns it lost the race."""
    await registry.register(meta())
    with pytest.raises(VersionExists, match="already registered"):
        await registry.register(meta())


async def test_the_database_allows_one_champion_per_name(
    registry: ModelRegistry, engine: AsyncEngine
) -> None:
    """The partial unique index refuses a second champion even past the registry's API."""
    await registry.register(meta(version=1), status="champion")
    await registry.register(meta(version=2))
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(model_versions)
                .where(model_versions.c.version == 2)
                .values(status="champion")
            )


async def test_only_one_of_two_racing_first_champions_is_registered(
    registry: ModelRegistry,
) -> None:
    """Two processes register their own first model at once: one becomes champion, the
    other is told (and registers nothing); it can then keep its version as a challenger."""
    results = await asyncio.gather(
        registry.register(meta(version=1), status="champion", only_if_no_champion=True),
        registry.register(meta(version=2), status="champion", only_if_no_champion=True),
        return_exceptions=True,
    )
    assert sum(isinstance(r, VersionExists) for r in results) == 1, results
    champion = await registry.champion("transaction.fraud")
    assert champion is not None
    assert [r.version for r in await registry.versions("transaction.fraud")] == [champion.version]


async def test_promote_retires_the_previous_champion(registry: ModelRegistry) -> None:
    """Promotion makes one champion and retires the old one; in_service follows."""
    await registry.register(meta(version=1), status="champion")
    await registry.register(meta(version=2))
    await registry.promote("transaction.fraud", 2)
    statuses = {r.version: r.status for r in await registry.versions("transaction.fraud")}
    assert statuses == {1: "retired", 2: "champion"}
    assert (await registry.in_service())["transaction.fraud"].champion == 2


async def test_rollback_walks_back_through_promotion_history(registry: ModelRegistry) -> None:
    """v1 → v2 → v3 promoted; rollback gives v2, a second rollback gives v1, then nothing."""
    await registry.register(meta(version=1), status="champion")
    for v in (2, 3):
        await registry.register(meta(version=v))
        await registry.promote("transaction.fraud", v)
    retired, restored = await registry.rollback("transaction.fraud")
    assert (retired.version, retired.status, restored.version) == (3, "retired", 2)
    _, restored = await registry.rollback("transaction.fraud")
    assert restored.version == 1
    assert restored.status == "champion"
    with pytest.raises(ConfigError, match="first champion"):
        await registry.rollback("transaction.fraud")


async def test_shadow_marks_a_challenger_and_never_the_champion(registry: ModelRegistry) -> None:
    """A challenger in shadow appears in in_service beside the champion; the champion
    cannot be shadowed; taking it out of shadow removes it."""
    await registry.register(meta(version=1), status="champion")
    await registry.register(meta(version=2))
    await registry.set_shadow("transaction.fraud", 2, True)
    plan = (await registry.in_service())["transaction.fraud"]
    assert (plan.champion, plan.shadows) == (1, (2,))
    with pytest.raises(ConfigError, match="is the champion"):
        await registry.set_shadow("transaction.fraud", 1, True)
    await registry.set_shadow("transaction.fraud", 2, False)
    assert (await registry.in_service())["transaction.fraud"].shadows == ()


async def test_every_change_is_in_the_history(registry: ModelRegistry) -> None:
    """register, promote, shadow and rollback each leave an event, newest first."""
    await registry.register(meta(version=1), status="champion")
    await registry.register(meta(version=2))
    await registry.set_shadow("transaction.fraud", 2, True)
    await registry.promote("transaction.fraud", 2)
    await registry.rollback("transaction.fraud")
    actions = [e.action for e in await registry.events("transaction.fraud")]
    assert actions[0] == "rolled_back"
    assert {"registered", "promoted", "shadow_on"} <= set(actions)


async def test_promoting_an_unknown_version_names_the_known_ones(registry: ModelRegistry) -> None:
    await registry.register(meta(version=1), status="champion")
    with pytest.raises(ConfigError, match=r"v7 is not registered .*v1"):
        await registry.promote("transaction.fraud", 7)


# --- artifact folder -------------------------------------------------------------------


def test_write_version_numbers_versions_and_checksums_files(tmp_path: Path) -> None:
    """Each write claims the next version; meta.json records the sha256 of every file."""
    first = artifacts.write_version(tmp_path, "order.risk", BytesFitted(), trained_on="t")
    second = artifacts.write_version(tmp_path, "order.risk", BytesFitted(b"x"), trained_on="t")
    assert (first.version, second.version) == (1, 2)
    folder = tmp_path / "order.risk" / "v2"
    assert second.files == {"model.bin": artifacts.sha256_file(folder / "model.bin")}
    assert json.loads((folder / "meta.json").read_text())["files"] == second.files
    assert artifacts.read_meta(tmp_path, "order.risk", 2) == second


def test_a_write_that_fails_midway_leaves_no_version(tmp_path: Path) -> None:
    """A crash while writing files leaves neither a version folder nor a staging folder."""
    with pytest.raises(RuntimeError, match="disk full"):
        artifacts.write_version(tmp_path, "order.risk", BytesFitted(fail=True), trained_on="t")
    assert list((tmp_path / "order.risk").iterdir()) == []
    assert artifacts.scan(tmp_path) == []


def test_scan_skips_incomplete_version_folders(tmp_path: Path) -> None:
    """An empty claimed folder (a crash before the rename) is not a version."""
    artifacts.write_version(tmp_path, "order.risk", BytesFitted(), trained_on="t")
    (tmp_path / "order.risk" / "v2").mkdir()
    assert [m.version for m in artifacts.scan(tmp_path)] == [1]
    assert artifacts.next_version(tmp_path, "order.risk") == 3


def test_a_bad_model_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"<event type>\.<model>"):
        artifacts.write_version(tmp_path, "../evil", BytesFitted(), trained_on="t")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_first_model_round_trips_through_its_files(trained_models: Path, name: str) -> None:
    """Each first model is on disk with checksums and loads with its family's loader."""
    (found,) = [m for m in artifacts.scan(trained_models) if m.name == name]
    served = load_served(trained_models, found)
    assert served.meta == found
    assert found.family == MODELS[name]
    assert found.window_start
    assert found.window_end
    assert found.metrics


@pytest.mark.parametrize("name", ["transaction.fraud", "ticket.category"])
def test_a_tampered_artifact_is_refused_with_the_file_named(models_copy: Path, name: str) -> None:
    """One flipped byte in a model file: loading refuses it, naming file and checksum."""
    (found,) = [m for m in artifacts.scan(models_copy) if m.name == name]
    file = models_copy / name / "v1" / next(iter(found.files))
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=f"{file.name} does not match its recorded checksum"):
        load_served(models_copy, found)


def test_a_replaced_meta_json_does_not_launder_a_replaced_file(models_copy: Path) -> None:
    """The registry's checksums are the ones trusted: rewriting meta.json to match a new
    file does not make the registered version load the new file."""
    (registered,) = [m for m in artifacts.scan(models_copy) if m.name == "order.risk"]
    folder = models_copy / "order.risk" / "v1"
    other = next(m for m in artifacts.scan(models_copy) if m.name == "transaction.fraud")
    shutil.copy(models_copy / "transaction.fraud" / "v1" / "model.skops", folder / "model.skops")
    forged = json.loads((folder / "meta.json").read_text())
    forged["files"] = other.files
    (folder / "meta.json").write_text(json.dumps(forged))
    with pytest.raises(ConfigError, match="does not match its recorded checksum"):
        load_served(models_copy, registered)


def test_a_missing_artifact_file_is_refused(models_copy: Path) -> None:
    (found,) = [m for m in artifacts.scan(models_copy) if m.name == "order.risk"]
    (models_copy / "order.risk" / "v1" / "model.skops").unlink()
    with pytest.raises(ConfigError, match=r"model\.skops is missing"):
        load_served(models_copy, found)


# --- start-up --------------------------------------------------------------------------


async def test_start_up_adopts_the_versions_on_disk_as_champions(
    registry: ModelRegistry, trained_models: Path
) -> None:
    """A fresh registry beside a models folder registers what is there, trains nothing,
    and a second start-up changes nothing."""
    progress: list[str] = []
    await ensure_champions(registry, trained_models, CATALOG, on_progress=progress.append)
    assert not any("training" in p for p in progress), progress
    plan = await registry.in_service()
    assert {n: p.champion for n, p in plan.items()} == dict.fromkeys(MODELS, 1)
    before = await registry.versions()
    await ensure_champions(registry, trained_models, CATALOG)
    assert await registry.versions() == before
    scorer, _ = await load_in_service(registry, trained_models)
    assert set(scorer.champions) == set(MODELS)


async def test_start_up_skips_a_corrupt_newest_version_when_adopting(
    registry: ModelRegistry, models_copy: Path
) -> None:
    """If the newest version on disk fails its checksum, the newest good one serves."""
    (v1,) = [m for m in artifacts.scan(models_copy) if m.name == "order.risk"]
    shutil.copytree(models_copy / "order.risk" / "v1", models_copy / "order.risk" / "v2")
    meta_path = models_copy / "order.risk" / "v2" / "meta.json"
    meta_path.write_text(meta_path.read_text().replace('"version": 1', '"version": 2'))
    (models_copy / "order.risk" / "v2" / "model.skops").write_bytes(b"garbage")
    await ensure_champions(registry, models_copy, CATALOG, on_progress=lambda _m: None)
    champion = await registry.champion("order.risk")
    assert champion is not None
    assert champion.meta == v1
