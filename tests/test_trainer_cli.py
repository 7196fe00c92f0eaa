"""``arbiter train``, ``arbiter trainer`` and the trainer's part of ``arbiter models show``,
each run as the real command in its own process against a real SQLite ledger."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.simulator.generate import labelled_events
from app.store import create_engine, upgrade
from app.store.ledger import Ledger
from app.store.outcomes import OutcomeStore
from app.store.registry import ModelRegistry
from app.trainer.bootstrap import ensure_champions
from tests.harness import arbiter
from tests.shipped import CATALOG
from tests.trainer_data import scored_by, seed

pytestmark = [pytest.mark.sqlite, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
NAME = "transaction.fraud"


@pytest.fixture
async def env(tmp_path: Path, trained_models: Path) -> dict[str, str]:
    """A migrated ledger with the first models and 1,500 decided, labelled transactions."""
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await upgrade(url)
    engine = create_engine(url)
    try:
        await ensure_champions(ModelRegistry(engine), models, CATALOG)
        events, labels = labelled_events("transaction", 1500, seed=301)
        scores = scored_by(models, NAME, events)
        await seed(Ledger(engine), OutcomeStore(engine), events, labels, model=NAME, scores=scores)
    finally:
        await engine.dispose()
    return {
        **os.environ,
        "ARBITER_DATABASE_URL": url,
        "ARBITER_MODELS_DIR": str(models),
        "ARBITER_DATA_DIR": str(tmp_path / "data"),
        "ARBITER_TRAINER_BUDGET_S": "4",
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
    }


def test_train_shows_each_phase_and_the_verdict_and_models_show_lists_the_run(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`arbiter train transaction.fraud` prints every phase (search trials included) and a
    table with the verdict and the report's path; `arbiter models show` then lists the run
    with its report and the drift of the champion."""
    done = arbiter("train", NAME, env=env, cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for phase in ("building the dataset", "feature selection", "model search", "tried", "refit"):
        assert phase in out, out
    assert "v2" in out
    assert "report.html" in out
    reports = list((tmp_path / "data" / "reports" / NAME).glob("run-*/report.html"))
    assert len(reports) == 1
    shown = arbiter("models", "show", NAME, env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "training runs" in shown.stdout
    assert "manual" in shown.stdout
    assert "report.html" in shown.stdout
    assert "drift of the champion" in shown.stdout
    assert "PSI" in shown.stdout
    # Readable: the chosen settings and calibration as lines, the thresholds the
    # champion reaches on its holdout as a table, no raw JSON.
    assert "estimator" in shown.stdout
    assert "calibration" in shown.stdout
    assert "mean score vs rate" in shown.stdout
    assert "on its holdout" in shown.stdout
    assert "precision >= " in shown.stdout
    assert "review 5% of events" in shown.stdout
    assert '{"' not in shown.stdout


def test_train_refuses_an_unknown_model_naming_the_known_ones(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A typo gets one error line listing the models, exit status 2, no traceback."""
    done = arbiter("train", "transaction.fruad", env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown model 'transaction.fruad'" in done.stderr
    assert "transaction.fraud" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_trainer_process_trains_when_due_and_stops_cleanly_on_sigterm(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`arbiter trainer` alone: 1,500 new labelled outcomes are past ARBITER_TRAINER_MIN_NEW
    (1,000 here), so it trains at its first look, logs the finished run, and exits 0 on
    SIGTERM."""
    log = tmp_path / "trainer.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from app.cli import main; main()", "trainer"],
            env={
                **env,
                "ARBITER_TRAINER_MIN_NEW": "1000",
                "ARBITER_TRAINER_POLL_S": "1",
                "ARBITER_LOG_FORMAT": "json",
            },
            cwd=tmp_path,
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 180
        while "training run finished" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "trainer stopped" in log.read_text()
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        runs = db.execute("SELECT model, trigger, status FROM training_runs").fetchall()
    assert (NAME, "new_outcomes") in {(m, t) for m, t, _ in runs}
    assert all(status in ("promoted", "kept") for _, _, status in runs), runs
