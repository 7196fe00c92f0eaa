"""A real, public, labelled data set as a data owner would bring it: the Wisconsin
breast cancer biopsies that ship inside scikit-learn (569 samples, 30 measurements,
malignant or benign). A type nobody shipped is declared for it, its history imported
from CSV, Parquet and a SQL table, and live samples decided with a rule on a measurement.
Its rule is backtested over the imported history; its declared model is trained on that
history, and a rule on the model's score decides the samples the trainer held out. Real
SQLite and PostgreSQL stores;
no timestamps in the data (the arrival time is used)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.datasets import load_breast_cancer
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.offline import as_records, run_batch
from app.declarations import load_declarations
from app.inference.scoring import Scorer
from app.ops.backtest import BacktestRequest, run_backtest
from app.ops.importer import ImportRequest, ImportSummary, import_history
from app.pipeline.models import load_in_service
from app.rules.loader import load_rulesets
from app.rules.runtime.engine import RulesEngine
from app.settings import Settings
from app.store import Ledger, create_engine
from app.store.outcomes import OutcomeStore
from app.store.registry import ModelRegistry
from app.trainer.service import Trainer
from tests.conftest import PG_ADMIN_URL

AT = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


def biopsies() -> pd.DataFrame:
    data = load_breast_cancer(as_frame=True)
    frame = data.data.copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame.insert(0, "sample_id", [f"s-{i:04d}" for i in range(len(frame))])
    frame.insert(1, "clinic", [f"clinic-{i % 7}" for i in range(len(frame))])
    frame["malignant"] = data.target == 0  # scikit-learn: 0 = malignant
    return frame


def declaration(frame: pd.DataFrame) -> str:
    measurements = [c for c in frame.columns if c not in ("sample_id", "clinic", "malignant")]
    lines = [
        "type: biopsy",
        "description: Wisconsin diagnostic breast cancer biopsies (scikit-learn).",
        "id: sample_id",
        "key: clinic",
        "time: arrival",
        "fields:",
        "  sample_id: string",
        "  clinic: string",
        *(f"  {m}: {{type: number, min: 0}}" for m in measurements),
        "labels:",
        "  malignant: boolean",
        "models:",
        "  - name: malignancy",
        "    predicts: {label: malignant}",
    ]
    return "\n".join(lines) + "\n"


RULES = """\
ruleset: biopsy
default: {decision: routine, reason: No large nucleus.}
rules:
  - name: urgent_large_nucleus
    when: {field: worst_area, gt: 1000}
    decision: urgent
    reason: "Worst area {worst_area:.0f} is above 1000."
"""


MODEL_RULES = """\
ruleset: biopsy
default: {decision: routine, reason: Low malignancy score.}
rules:
  - name: urgent_by_model
    when: {field: scores.malignancy, gte: 0.5}
    decision: urgent
    reason: "Malignancy score {scores.malignancy:.2f}."
"""


async def test_a_public_labelled_data_set_is_declared_imported_three_ways_and_decided(
    db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    frame = biopsies()
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "biopsy.yaml").write_text(declaration(frame), encoding="utf-8")
    declarations, problems = load_declarations(schemas)
    assert problems == []

    csv_part, parquet_part, sql_part = frame.iloc[:400], frame.iloc[400:500], frame.iloc[500:]
    csv_path = tmp_path / "biopsies.csv"
    csv_part.to_csv(csv_path, index=False)
    parquet_path = tmp_path / "biopsies.parquet"
    parquet_part.to_parquet(parquet_path, index=False)
    table = f"biopsies_{uuid.uuid4().hex[:8]}"
    if db_url.startswith("postgresql"):
        source_url = make_url(PG_ADMIN_URL).render_as_string(hide_password=False)
        source = create_engine(source_url)
        async with source.begin() as conn:
            await conn.run_sync(lambda c: sql_part.to_sql(table, c, index=False))
    else:
        source_url = f"sqlite:///{tmp_path / 'lab.db'}"
        sync = sa.create_engine(source_url)
        sql_part.to_sql(table, sync, index=False)
        sync.dispose()

    async def run(**what: Any) -> ImportSummary:
        request = ImportRequest("biopsy", at=AT, rejects=tmp_path / "rejects.jsonl", **what)
        return await import_history(request, database_url=db_url, schemas_dir=schemas, now=AT)

    try:
        summaries = [
            await run(files=(csv_path,)),
            await run(files=(parquet_path,)),
            await run(sql=f'SELECT * FROM "{table}"', sql_url=source_url),
        ]
        again = await run(files=(csv_path,))
    finally:
        if db_url.startswith("postgresql"):
            async with source.begin() as conn:
                await conn.execute(sa.text(f'DROP TABLE "{table}"'))
            await source.dispose()

    assert [s.imported for s in summaries] == [400, 100, 69]
    assert again.imported == 0
    assert again.already_present == 400
    ledger = Ledger(engine)
    assert await ledger.count_imported() == len(frame)
    assert await ledger.count_decisions() == 0  # history, not decisions
    labelled = {r.event_id: r.labels for r in await OutcomeStore(engine).labelled("biopsy")}
    assert len(labelled) == len(frame)
    truth = dict(zip(frame["sample_id"], frame["malignant"], strict=True))
    assert all(labelled[i] == {"malignant": bool(truth[i])} for i in truth)

    # The rule replayed over the imported history (`arbiter rules backtest`).
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "biopsy.yaml").write_text(RULES, encoding="utf-8")
    served = declarations["biopsy"]
    rulesets = load_rulesets(
        rules, {"biopsy": served.field_kinds()}, {"biopsy": served.score_kinds()}
    )
    report = await run_backtest(BacktestRequest(db_url, since=AT - timedelta(hours=1)), rulesets)
    [by_type] = report.by_type
    urgent = int((frame["worst_area"] > 1000).sum())
    assert by_type.transitions == {
        ("imported", "urgent"): urgent,
        ("imported", "routine"): len(frame) - urgent,
    }

    # Live samples through the real rules, offline core (no model trained yet).
    engine_rules = RulesEngine(rulesets)
    try:
        live = frame.drop(columns=["malignant"]).iloc[:50].to_dict(orient="records")
        out = run_batch(
            as_records("biopsy", [json.dumps(row) for row in live]),
            scorer=Scorer({}),  # no model trained yet: every score is missing
            rules=engine_rules,
            event_models={"biopsy": served.model},
        )
    finally:
        engine_rules.close()
    decided = {d.decision.event_id: d.decision for d in out.decided}
    assert len(decided) == 50
    for row in live:
        expected = "urgent" if row["worst_area"] > 1000 else "routine"
        assert decided[row["sample_id"]].decision == expected
    assert {d.decision for d in decided.values()} == {"urgent", "routine"}

    # The declared model trained on the imported history (what `arbiter train
    # biopsy.malignancy` runs), then a rule on its score decides samples it held out.
    settings = Settings(
        database_url=db_url,
        data_dir=tmp_path / "data",
        schemas_dir=schemas,
        rules_dir=rules,
        trainer_budget_s=5.0,
    )
    [trained] = await Trainer(settings, engine).train(
        "biopsy.malignancy", "manual", in_process=True
    )
    assert trained.status == "promoted", trained.reason
    registry = ModelRegistry(engine)
    champion = await registry.champion("biopsy.malignancy")
    assert champion is not None
    assert champion.meta.metrics["roc_auc"] >= 0.97, champion.meta.metrics
    scorer, _ = await load_in_service(registry, settings.resolved_models_dir)
    (rules / "biopsy.yaml").write_text(MODEL_RULES, encoding="utf-8")
    engine_rules = RulesEngine(
        load_rulesets(rules, {"biopsy": served.field_kinds()}, {"biopsy": served.score_kinds()})
    )
    try:
        held_out = frame.iloc[-60:]  # the newest quarter by id: the trainer's holdout
        live = held_out.drop(columns=["malignant"]).to_dict(orient="records")
        out = run_batch(
            as_records("biopsy", [json.dumps(row) for row in live]),
            scorer=scorer,
            rules=engine_rules,
            event_models={"biopsy": served.model},
        )
    finally:
        engine_rules.close()
    decided = {d.decision.event_id: d.decision for d in out.decided}
    truth = dict(zip(held_out["sample_id"], held_out["malignant"], strict=True))
    right = sum((decided[i].decision == "urgent") == bool(truth[i]) for i in truth)
    assert right >= 0.9 * len(truth), (right, len(truth))
    assert all(0.0 <= d.scores["malignancy"] <= 1.0 for d in decided.values())


pytestmark = [pytest.mark.timeout(300)]
