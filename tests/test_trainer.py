"""The trainer on simulator data: it learns the planted pattern, recovers from planted
drift, never promotes a worse challenger, and a crash leaves the registry as it was.

Training runs are real (scikit-learn fits, artifacts written and loaded back, reports
written); the store is a real SQLite file (and PostgreSQL where marked).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.inference import artifacts
from app.inference.loading import load_served
from app.settings import Settings
from app.simulator.generate import labelled_events
from app.store import create_engine, upgrade
from app.store.ledger import Ledger
from app.store.outcomes import OutcomeStore
from app.store.registry import ModelRegistry
from app.store.training import TrainingStore
from app.trainer.jobs.job import run_job
from app.trainer.jobs.run import Limits, TrainJob
from app.trainer.service import LEASE, Trainer
from tests.shipped import CATALOG
from tests.trainer_data import FAST, records, scored_by, seed

pytestmark = [pytest.mark.timeout(300)]

NAME = "transaction.fraud"


def _job(tmp_path: Path, recs: tuple, champion=None, limits: Limits = FAST, run_id: int = 1):  # type: ignore[no-untyped-def]
    return TrainJob(
        target=NAME,
        trigger="test",
        run_ids={NAME: run_id},
        records=recs,
        champions={NAME: champion},
        models_dir=tmp_path / "models",
        reports_dir=tmp_path / "reports",
        declared={NAME: CATALOG[NAME]},
        limits=limits,
    )


def test_a_run_learns_the_planted_fraud_pattern_and_writes_a_loadable_version(
    tmp_path: Path,
) -> None:
    """6,000 labelled transactions: the challenger's holdout ROC-AUC clears a floor (the
    first model reaches ~0.90 on 30,000), every step is recorded, the version loads and
    carries its drift reference, the report is on disk."""
    events, labels = labelled_events("transaction", 6000, seed=31)
    (result,) = run_job(_job(tmp_path, records(events, labels)))
    assert result.status == "trained", result.reason
    assert result.challenger_metrics["roc_auc"] >= 0.82, result.challenger_metrics
    assert result.promote, "with no champion the first challenger serves"
    summary = result.summary
    assert summary["n_train"] + summary["n_holdout"] == 6000
    assert summary["train_window"][1] <= summary["holdout_window"][0], "holdout is the future"
    assert {c["estimator"] for c in summary["candidates"]} >= {"logreg", "hgb"}
    assert summary["cleaning"]["kept"] == 6000
    meta = result.challenger
    assert meta is not None
    assert "drift" in meta.params
    served = load_served(tmp_path / "models", meta)
    assert served.meta.version == meta.version
    report = Path(result.report)
    assert report.is_file()
    assert "roc.svg" in {p.name for p in report.parent.iterdir()}


def test_planted_drift_drops_the_champion_on_recent_data_and_a_retrain_restores_it(
    tmp_path: Path,
) -> None:
    """A champion trained before the fraud pattern changed ranks recent (drifted) fraud
    far worse than it did on its own holdout; the retrain on data that includes the new
    pattern beats it by a wide margin on the same recent holdout and is promoted."""
    before, before_labels = labelled_events("transaction", 6000, seed=41)
    (first,) = run_job(_job(tmp_path, records(before, before_labels)))
    assert first.challenger is not None
    champion = first.challenger
    own_auc = champion.metrics["roc_auc"]

    after, after_labels = labelled_events("transaction", 9000, seed=42, drift_at=1500)
    (second,) = run_job(_job(tmp_path, records(after, after_labels), champion, run_id=2))
    assert second.status == "trained", second.reason
    champ_recent = second.champion_metrics["roc_auc"]
    retrained = second.challenger_metrics["roc_auc"]
    assert champ_recent <= own_auc - 0.10, (own_auc, champ_recent)
    assert retrained >= champ_recent + 0.10, (champ_recent, retrained)
    assert retrained >= 0.75
    assert second.promote, second.reason


@pytest.fixture
def settings(tmp_path: Path, trained_models: Path) -> Settings:
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
        data_dir=tmp_path / "data",
        models_dir=models,
        trainer_budget_s=FAST.budget_s,
        trainer_min_new=1000,
    )


@pytest.fixture
async def migrated_sqlite(settings: Settings) -> AsyncIterator[AsyncEngine]:
    url = settings.resolved_database_url
    await upgrade(url)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _registered(engine: AsyncEngine, settings: Settings) -> ModelRegistry:
    from app.trainer.bootstrap import ensure_champions

    registry = ModelRegistry(engine)
    await ensure_champions(registry, settings.resolved_models_dir, CATALOG)
    return registry


async def test_new_outcomes_trigger_a_run_that_is_recorded_and_counted_from_once(
    settings: Settings, migrated_sqlite: AsyncEngine
) -> None:
    """Below ARBITER_TRAINER_MIN_NEW nothing is due; past it the model is due, a tick
    trains it (recorded in the experiment history with its report), and right after
    nothing is due again: new outcomes are counted from the last run."""
    engine = migrated_sqlite
    registry = await _registered(engine, settings)
    trainer = Trainer(settings, engine, holder="test")
    trainer.limits = FAST
    events, labels = labelled_events("transaction", 3000, seed=51)
    scores = scored_by(settings.resolved_models_dir, NAME, events)
    ledger, store = Ledger(engine), OutcomeStore(engine)
    await seed(ledger, store, events[:600], labels[:600], model=NAME, scores=scores[:600])
    assert await trainer.due() == {}, "no drift, too few outcomes: nothing to do"
    await seed(
        ledger, store, events[600:], labels[600:], model=NAME, scores=scores[600:], offset=600
    )
    assert (await trainer.due()).get(NAME) == "new_outcomes"
    done = await trainer.tick()
    (run,) = [d for d in done if d.model == NAME]
    assert run.status in ("promoted", "kept"), run.reason
    assert run.version == 2
    assert os.path.isfile(run.report)  # noqa: ASYNC240 (a test's one quick look)
    history = await TrainingStore(engine).runs(NAME)
    assert history[0].status == run.status
    assert history[0].summary["candidates"]
    assert history[0].challenger_metrics["roc_auc"] > 0.7
    champion = await registry.champion(NAME)
    assert champion is not None
    assert champion.version == (2 if run.status == "promoted" else 1)
    assert NAME not in await trainer.due()


async def test_a_worse_challenger_is_kept_as_challenger_and_the_champion_stays(
    settings: Settings, migrated_sqlite: AsyncEngine
) -> None:
    """Outcomes with 35 % label noise train a weaker model than the champion (trained on
    30,000 clean events): it is registered as a challenger (in shadow, as
    ARBITER_TRAINER_SHADOW_KEPT asks), the champion keeps serving, and the run says why."""
    engine = migrated_sqlite
    registry = await _registered(engine, settings)
    kept_in_shadow = settings.replace(trainer_shadow_kept=True)
    trainer = Trainer(kept_in_shadow, engine, holder="test")
    trainer.limits = FAST
    events, labels = labelled_events("transaction", 1600, seed=61, label_noise=0.35)
    await seed(Ledger(engine), OutcomeStore(engine), events, labels, model=NAME)
    (run,) = await trainer.train(NAME, "manual")
    assert run.status == "kept", run.reason
    assert "champion" in run.reason
    champion = await registry.champion(NAME)
    assert champion is not None
    assert champion.version == 1
    challenger = await registry.get(NAME, run.version or 0)
    assert challenger is not None
    assert challenger.status == "challenger"
    assert challenger.shadow
    (history,) = await TrainingStore(engine).runs(NAME)
    assert history.challenger_metrics["roc_auc"] < history.champion_metrics["roc_auc"]


async def test_a_crash_mid_training_leaves_the_registry_unchanged(
    settings: Settings, migrated_sqlite: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The training process dies while refitting (injected): the run is recorded as
    failed with the reason, no version is registered, the champion still serves, and
    the lease is free for the next run."""
    engine = migrated_sqlite
    registry = await _registered(engine, settings)
    before = [(r.name, r.version, r.status) for r in await registry.versions()]
    events, labels = labelled_events("transaction", 1500, seed=71)
    await seed(Ledger(engine), OutcomeStore(engine), events, labels, model=NAME)
    monkeypatch.setenv("ARBITER_TRAINER_CRASH_AT", "refitting")
    trainer = Trainer(settings, engine, holder="test")
    trainer.limits = FAST
    (run,) = await trainer.train(NAME, "manual")  # in a spawned child process
    assert run.status == "failed"
    assert "exited with code 17" in run.reason
    assert [(r.name, r.version, r.status) for r in await registry.versions()] == before
    (history,) = await TrainingStore(engine).runs(NAME)
    assert history.status == "failed"
    assert await TrainingStore(engine).holder(LEASE) is None
    assert os.environ["ARBITER_TRAINER_CRASH_AT"] == "refitting"


async def test_a_run_left_running_by_a_dead_process_is_closed_as_abandoned(
    settings: Settings, migrated_sqlite: AsyncEngine
) -> None:
    """A run row still ``running`` (its process was killed) is closed ``abandoned`` by
    the next trainer that takes the lease, before it trains."""
    engine = migrated_sqlite
    await _registered(engine, settings)
    store = TrainingStore(engine)
    stale = await store.open_run(NAME, "manual", "gone-host:1", 0)
    events, labels = labelled_events("transaction", 1200, seed=81)
    await seed(Ledger(engine), OutcomeStore(engine), events, labels, model=NAME)
    trainer = Trainer(settings, engine, holder="test")
    trainer.limits = FAST
    await trainer.train(NAME, "manual", in_process=True)
    found = await store.get(stale)
    assert found is not None
    assert found.status == "abandoned"


async def test_only_one_trainer_holds_the_lease_until_it_expires_or_is_released(
    engine: AsyncEngine,
) -> None:
    """Two trainers race for the lease: one wins; the loser gets it once it is released
    (or once it expired) — on SQLite and PostgreSQL."""
    from datetime import timedelta

    store = TrainingStore(engine)
    assert await store.acquire(LEASE, "a", timedelta(minutes=1))
    assert not await store.acquire(LEASE, "b", timedelta(minutes=1))
    assert await store.acquire(LEASE, "a", timedelta(minutes=1)), "the holder renews"
    await store.release(LEASE, "a")
    assert await store.acquire(LEASE, "b", timedelta(seconds=-1))  # taken, already expired
    assert await store.acquire(LEASE, "a", timedelta(minutes=1)), "an expired lease is free"


async def test_new_labelled_outcomes_and_the_recent_window_are_read_on_both_backends(
    engine: AsyncEngine,
) -> None:
    """``labelled_since`` counts outcomes past a watermark whose decision is known (an
    outcome for an unknown event does not count); ``recent_decisions`` returns the newest
    decisions oldest first, each with its latest outcome's labels."""
    from app.store.training import recent_decisions
    from tests.trainer_data import outcomes_of

    events, labels = labelled_events("transaction", 300, seed=91)
    ledger, outcomes, store = Ledger(engine), OutcomeStore(engine), TrainingStore(engine)
    await seed(ledger, outcomes, events[:200], labels[:200], model=NAME)
    mark = await store.outcome_watermark()
    assert await store.labelled_since("transaction", 0) == 200
    assert await store.labelled_since("transaction", mark) == 0
    # Outcomes for 100 events never decided: kept, but not labelled examples.
    unknown = outcomes_of(events[200:], labels[200:])
    await outcomes.record(unknown, unknown[0].occurred_at)
    assert await store.labelled_since("transaction", mark) == 0
    assert await store.outcome_watermark() > mark
    recent = await recent_decisions(engine, "transaction", 50)
    assert [d.event_id for d in recent] == [e.event_id for e in events[150:200]]
    assert all(d.labels == dict(lb) for d, lb in zip(recent, labels[150:200], strict=True))


def test_the_ticket_heads_retrain_together_from_agent_confirmed_labels(
    tmp_path: Path, trained_models: Path
) -> None:
    """800 tickets with agent-confirmed labels: the three heads are refit in one encoder
    pass on the variant the champions serve with, each judged against its own champion on
    the same holdout (macro-F1), each with a confusion-matrix report."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    heads = ("ticket.category", "ticket.urgency", "ticket.sentiment")
    champions = {n: [m for m in artifacts.scan(models) if m.name == n][-1] for n in heads}
    events, labels = labelled_events("ticket", 800, seed=95)
    job = TrainJob(
        target="ticket",
        trigger="test",
        run_ids={n: i for i, n in enumerate(heads, start=1)},
        records=records(events, labels),
        champions=dict(champions),
        models_dir=models,
        reports_dir=tmp_path / "reports",
        declared={n: CATALOG[n] for n in heads},
        limits=FAST,
    )
    results = {r.model: r for r in run_job(job)}
    assert set(results) == set(heads)
    for name, result in results.items():
        assert result.status == "trained", result.reason
        assert result.challenger is not None
        assert result.challenger.params["variant"] == champions[name].params["variant"]
        assert result.challenger_metrics["accuracy"] >= 0.9, (name, result.challenger_metrics)
        assert "macro_f1" in result.champion_metrics
        assert result.summary["n_holdout"] == 200
        folder = Path(result.report).parent
        assert any(p.name.startswith("confusion-") for p in folder.iterdir())


async def test_a_champion_losing_its_edge_on_recent_outcomes_triggers_a_drift_retrain(
    settings: Settings, migrated_sqlite: AsyncEngine
) -> None:
    """Decisions made after the fraud pattern changed, scored by the champion: too few
    new outcomes for a regular retrain, but its ROC-AUC on them falls far below its
    holdout's, so the monitor says why and the model is due with trigger ``drift``."""
    from app.trainer.monitor import DriftLimits, measure

    engine = migrated_sqlite
    registry = await _registered(engine, settings)
    trainer = Trainer(settings.replace(trainer_min_new=5000), engine)
    events, labels = labelled_events("transaction", 1200, seed=97, drift_at=0)
    scores = scored_by(settings.resolved_models_dir, NAME, events)
    await seed(Ledger(engine), OutcomeStore(engine), events, labels, model=NAME, scores=scores)
    status = await measure(engine, registry, NAME, DriftLimits(), CATALOG[NAME])
    assert status.recent_auc is not None
    assert status.holdout_auc is not None
    assert status.recent_auc <= status.holdout_auc - 0.15, status
    assert any("ROC-AUC on recent outcomes" in r for r in status.reasons)
    assert status.psi, "the first model carries a drift reference: PSI is measured"
    assert (await trainer.due()).get(NAME) == "drift"


async def test_a_shifted_feature_shows_as_a_psi_alert_on_that_feature(
    settings: Settings, migrated_sqlite: AsyncEngine
) -> None:
    """Every recent transaction arrives through one channel (the training mix had five):
    the channel's PSI passes the alert threshold and is the worst; the score and the
    label rate are reported beside it."""
    from app.trainer.jobs.drift import PSI_ALERT
    from app.trainer.monitor import DriftLimits, measure

    engine = migrated_sqlite
    registry = await _registered(engine, settings)
    events, labels = labelled_events("transaction", 800, seed=98)
    shifted = [e.model_copy(update={"channel": "atm"}) for e in events]
    scores = scored_by(settings.resolved_models_dir, NAME, shifted)
    await seed(Ledger(engine), OutcomeStore(engine), shifted, labels, model=NAME, scores=scores)
    status = await measure(engine, registry, NAME, DriftLimits(), CATALOG[NAME])
    assert status.report is not None
    assert status.psi["channel"] >= PSI_ALERT, status.psi
    assert status.report.worst is not None
    assert status.report.worst[0] == "channel"
    assert "score" in status.psi
    assert status.report.label_rate is not None
    assert any("PSI of channel" in r for r in status.reasons)


async def test_the_schedule_trains_a_model_with_new_outcomes_once_its_interval_passed(
    settings: Settings, migrated_sqlite: AsyncEngine
) -> None:
    """With ARBITER_TRAINER_EVERY_H set, a model with some new outcomes (fewer than
    MIN_NEW) is due with trigger ``schedule`` once the interval since its last run has
    passed — and not before."""
    import asyncio

    engine = migrated_sqlite
    await _registered(engine, settings)
    events, labels = labelled_events("transaction", 300, seed=99)
    scores = scored_by(settings.resolved_models_dir, NAME, events)
    store = TrainingStore(engine)
    last = await store.open_run(NAME, "manual", "test", 0)
    await store.close_run(last, "kept", reason="earlier run")
    await seed(Ledger(engine), OutcomeStore(engine), events, labels, model=NAME, scores=scores)
    hourly = Trainer(settings.replace(trainer_every_h=1.0), engine)
    assert NAME not in await hourly.due(), "an hour has not passed"
    quick = Trainer(settings.replace(trainer_every_h=0.5 / 3600), engine)
    await asyncio.sleep(0.6)
    assert (await quick.due()).get(NAME) == "schedule"


def test_the_auc_standard_error_shrinks_with_more_outcomes() -> None:
    """Hanley & McNeil: 27 positives in 300 give a wide interval (a 0.06 drop is within
    noise), 300 in 3,000 a narrow one."""
    from app.trainer.monitor import auc_standard_error

    small = auc_standard_error(0.84, 27, 273)
    large = auc_standard_error(0.84, 300, 2700)
    assert 0.03 < small < 0.06
    assert large < small / 2.5
    assert auc_standard_error(1.0, 10, 10) == 0.0
