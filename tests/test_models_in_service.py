"""Promotion, rollback and shadow under a running consumer: a real broker, a real SQLite
ledger, the real first models, and the ``arbiter models`` CLI in its own process.

Each step produces a fresh batch of transactions and reads what the ledger logged for
them: which version scored each event, and what a shadow said beside it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from app.inference import artifacts
from app.settings import Settings
from app.simulator.generate import generate, training_set
from app.store.ledger import Ledger
from app.store.registry import ModelRegistry
from app.trainer.jobs import fit_tabular
from app.values import StoredDecision
from app.wiring import consume_loop, start_components
from connectors.broker import EmbeddedBroker
from tests.harness import arbiter, produce, wait_decided, wait_until
from tests.shipped import CATALOG

pytestmark = [pytest.mark.kafka, pytest.mark.sqlite, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
NAME = "transaction.fraud"


def _cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "ARBITER_DATABASE_URL": settings.resolved_database_url,
        "ARBITER_MODELS_DIR": str(settings.resolved_models_dir),
        "ARBITER_DATA_DIR": str(settings.data_dir),
        "PYTHONPATH": str(ROOT),
    }


async def _decide(
    broker: EmbeddedBroker, ledger: Ledger, seed: int, n: int = 60
) -> list[StoredDecision]:
    """Produce ``n`` valid transactions and wait until the ledger holds all their decisions."""
    events = [
        e for e in generate(n * 4, seed=seed, malformed_rate=0.0) if e.event_type == "transaction"
    ][:n]
    await produce(broker.bootstrap, events)
    return await wait_decided(ledger, [e.event_id for e in events if e.event_id])


async def _decide_ticket(broker: EmbeddedBroker, ledger: Ledger) -> StoredDecision:
    event = next(e for e in generate(50, seed=106, malformed_rate=0.0) if e.event_type == "ticket")
    await produce(broker.bootstrap, [event])
    (decided,) = await wait_decided(ledger, [event.event_id or ""])
    return decided


def _versions(decisions: Sequence[StoredDecision]) -> set[str]:
    return {d.record.model_versions[NAME] for d in decisions}


def _challenger(models_dir: Path) -> artifacts.ModelMeta:
    """A genuinely different second version: logistic regression on other simulator data."""
    spec = CATALOG[NAME]
    events, labels = training_set("transaction", 4000, seed=5)
    fitted = fit_tabular.fit(spec, events, [bool(lb["fraud"]) for lb in labels], estimator="logreg")
    return artifacts.write_version(
        models_dir, NAME, fitted, trained_on="test: logreg seed=5", window=fitted.window
    )


async def test_promote_rollback_and_shadow_take_effect_in_a_running_consumer(
    broker: EmbeddedBroker, trained_models: Path, tmp_path: Path
) -> None:
    """v1 serves; v2 in shadow is logged beside v1 without deciding; `models promote`
    makes new decisions carry v2 within seconds, no restart; `models rollback` brings v1
    back; a promoted version whose artifact is corrupt is refused and v1 keeps serving."""
    models = tmp_path / "models"
    import shutil

    shutil.copytree(trained_models, models)
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
        data_dir=tmp_path / "data",
        models_dir=models,
        batch_wait_ms=20,
        models_poll_s=0.3,
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
        auto_migrate=True,
    )
    env = _cli_env(settings)
    async with start_components(settings) as c:
        loop = consume_loop(c)
        task = asyncio.create_task(loop.run())
        await asyncio.wait_for(loop.ready.wait(), 30)
        registry: ModelRegistry = c.registry

        first = await _decide(broker, c.ledger, seed=101)
        assert _versions(first) == {"v1"}
        assert all(d.record.explanations.get(NAME, {}).get("top") for d in first)

        v2 = _challenger(models)
        await registry.register(v2)
        shadow = arbiter("models", "shadow", NAME, "2", env=env, cwd=tmp_path)
        assert shadow.returncode == 0, shadow.stderr
        await wait_until(lambda: bool(c.processor.scorer.shadows.get(NAME)), timeout=30)
        shadowed = await _decide(broker, c.ledger, seed=102)
        assert _versions(shadowed) == {"v1"}, "a shadow must never decide"
        beside = [d.record.shadow_scores.get(f"{NAME}@v2", {}).get("fraud") for d in shadowed]
        assert all(isinstance(s, float) for s in beside), beside
        differ = sum(s != d.record.scores["fraud"] for s, d in zip(beside, shadowed, strict=True))
        assert differ > len(shadowed) // 2, "the shadow's scores should be its own"

        promoted = arbiter("models", "promote", NAME, "2", env=env, cwd=tmp_path)
        assert promoted.returncode == 0, promoted.stderr
        await wait_until(lambda: c.processor.scorer.versions("transaction")[NAME] == "v2", 30)
        assert _versions(await _decide(broker, c.ledger, seed=103)) == {"v2"}

        rolled = arbiter("models", "rollback", NAME, env=env, cwd=tmp_path)
        assert rolled.returncode == 0, rolled.stderr
        assert "v1 is the champion again" in rolled.stdout
        await wait_until(lambda: c.processor.scorer.versions("transaction")[NAME] == "v1", 30)
        assert _versions(await _decide(broker, c.ledger, seed=104)) == {"v1"}

        # The CLI verifies before promoting: a corrupt v3 is refused there …
        v3 = artifacts.write_version(
            models, NAME, _FileCopy(models / NAME / "v2"), trained_on="test: copy of v2"
        )
        await registry.register(v3)
        model_file = models / NAME / "v3" / "model.skops"
        model_file.write_bytes(model_file.read_bytes()[:-10] + b"corrupted!")
        refused = arbiter("models", "promote", NAME, "3", env=env, cwd=tmp_path)
        assert refused.returncode == 2
        assert "does not match its recorded checksum" in refused.stderr
        # … and if it is promoted anyway (straight in the database), the consumer refuses
        # to load it and the version in service keeps serving.
        await registry.promote(NAME, 3)
        await wait_until(lambda: _has_event(registry, "refused"), timeout=30)
        after = await _decide(broker, c.ledger, seed=105)
        assert _versions(after) == {"v1"}
        ticket = await _decide_ticket(broker, c.ledger)
        loop.stop()
        await task

    # `arbiter explain` on logged decisions: rules, scores with their drivers, and for a
    # ticket the words that moved its labels (computed with the version that scored it).
    wide = {**env, "COLUMNS": "200"}
    explained = arbiter("explain", after[0].record.event_id, env=wide, cwd=tmp_path)
    assert explained.returncode == 0, explained.stderr
    assert "rules fired" in explained.stdout
    assert "occlusion" in explained.stdout
    assert f"{NAME} v1:" in explained.stdout  # the model's reason sentence
    words = arbiter("explain", ticket.record.event_id, env=wide, cwd=tmp_path, timeout=120)
    assert words.returncode == 0, words.stderr
    assert "word-occlusion" in words.stdout
    assert "top-classes" in words.stdout


async def _has_event(registry: ModelRegistry, action: str) -> bool:
    return any(e.action == action for e in await registry.events(NAME))


class _FileCopy:
    """Re-register an existing version's files as a new version (same family and kind)."""

    def __init__(self, source: Path) -> None:
        self._source = source
        meta = artifacts.read_meta(source.parent.parent, source.parent.name, int(source.name[1:]))
        self.family, self.kind = meta.family, meta.kind
        self.features, self.metrics = meta.features, meta.metrics
        self.classes, self.params = meta.classes, meta.params

    def write(self, folder: Path) -> list[str]:
        import shutil

        shutil.copy(self._source / "model.skops", folder / "model.skops")
        return ["model.skops"]


def test_cli_models_list_and_show_print_the_registry(trained_models: Path, tmp_path: Path) -> None:
    """`models list` shows every model's champion with its metric; `models show` shows
    metrics, files with checksums and the history; `explain` of an unknown id says so."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    env = {
        **os.environ,
        "ARBITER_DATABASE_URL": db,
        "ARBITER_MODELS_DIR": str(trained_models),
        "PYTHONPATH": str(ROOT),
    }
    assert arbiter("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    adopt = (
        "import asyncio\n"
        "from pathlib import Path\n"
        "from app.trainer.bootstrap import ensure_champions\n"
        "from app.store.db import create_engine\n"
        "from app.store.registry import ModelRegistry\n"
        "from tests.shipped import CATALOG\n"
        "async def main():\n"
        f"    e = create_engine({db!r})\n"
        f"    await ensure_champions(ModelRegistry(e), Path({str(trained_models)!r}), CATALOG)\n"
        "    await e.dispose()\n"
        "asyncio.run(main())\n"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", adopt], env=env, cwd=ROOT, check=True, timeout=120)
    listed = arbiter("models", "list", env={**env, "COLUMNS": "200"}, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for name in ("transaction.fraud", "order.risk", "ticket.category", "ticket.sentiment"):
        assert name in listed.stdout
    assert "champion" in listed.stdout
    assert "roc_auc" in listed.stdout
    shown = arbiter("models", "show", NAME, "--all", env={**env, "COLUMNS": "200"}, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "model.skops" in shown.stdout
    assert "sha256" in shown.stdout
    assert "estimator" in shown.stdout
    assert "calibration" in shown.stdout
    assert "params:" not in shown.stdout  # settings as lines, no raw JSON
    assert "registered" in shown.stdout
    assert "roc_auc" in shown.stdout
    unknown = arbiter("models", "show", "nope.model", env=env, cwd=tmp_path)
    assert unknown.returncode == 2
    assert "no model called" in unknown.stderr
    missing = arbiter("explain", "no-such-event", env=env, cwd=tmp_path)
    assert missing.returncode == 2
    assert "no decision is logged" in missing.stderr
