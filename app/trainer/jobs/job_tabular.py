"""A tabular model's training run (``job.run_job`` for a declared model of ``kind:
tabular``), and the drift reference every tabular version carries."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.inference import artifacts, features, tabular
from app.inference.loading import load_served
from app.trainer.jobs import drift, fit_tabular
from app.trainer.jobs.conclude import conclude, windows
from app.trainer.jobs.dataset import (
    NotEnoughData,
    Split,
    build_examples,
    sample_weights,
    time_split,
)
from app.trainer.jobs.evaluate import (
    binary_metrics,
    binary_verdict,
    reliability,
    threshold_table,
)
from app.trainer.jobs.run import Amended, Judgement, ModelResult, Progress, TrainJob
from app.trainer.jobs.search import search, select_features
from app.trainer.report.report import Curves
from app.values import ModelMeta

DRIFT_FEATURES = 6  # the most informative input columns watched for drift, per model
IMPORTANCES_SHOWN = 15


def run_tabular(job: TrainJob, name: str, say: Progress) -> ModelResult:
    limits, run_id = job.limits, job.run_ids[name]
    declared = job.declared[name]
    say(f"{name}: building the dataset from {len(job.records):,} labelled decisions")
    examples, cleaning = build_examples(declared, job.records, max_rows=limits.max_rows)
    try:
        split = time_split(
            examples,
            holdout_share=limits.holdout_share,
            min_train=limits.min_train,
            min_holdout=limits.min_holdout,
        )
    except NotEnoughData as exc:
        return ModelResult(
            name, run_id, "skipped", str(exc), summary={"cleaning": cleaning.as_dict()}
        )

    say(f"{name}: feature rows ({len(split.train):,} train, {len(split.holdout):,} holdout)")
    ordered = [*split.train, *split.holdout]
    rows = tabular.rows_in_order(declared, [e.event for e in ordered])
    cut = len(split.train)
    train_rows, holdout_rows = rows[:cut], rows[cut:]
    y_train = np.asarray([int(bool(e.target)) for e in split.train])
    y_holdout = np.asarray([int(bool(e.target)) for e in split.holdout])
    weights = sample_weights(
        y_train, [e.occurred_at for e in split.train], half_life_days=limits.half_life_days
    )

    numeric, categorical = fit_tabular.discover_columns(train_rows)
    say(f"{name}: feature selection over {len(numeric) + len(categorical)} input columns")
    keep = declared.spec.keep
    selection = select_features(
        train_rows,
        y_train,
        numeric,
        categorical,
        forced=[c for c in (*numeric, *categorical) if c in keep or c.split(".")[0] in keep],
        max_features=limits.max_features,
        seed=limits.seed,
    )
    x_train = tabular.pipeline_input(train_rows, selection.numeric, selection.categorical)
    say(f"{name}: model search ({limits.budget_s:.0f} s budget, {limits.folds}-fold time CV)")
    found = search(
        x_train,
        y_train,
        weights,
        selection.numeric,
        selection.categorical,
        estimators=limits.estimators,
        budget_s=limits.budget_s,
        folds=limits.folds,
        seed=limits.seed,
        on_trial=lambda t: say(
            f"{name}: tried {t.estimator} {t.params} → CV roc_auc {t.cv_score:.4f}"
        ),
    )
    best = found.best
    say(
        f"{name}: refitting {best.estimator} {best.params} on all training rows, "
        "calibrated on the newest of them"
    )
    started = time.perf_counter()
    fitted = fit_tabular.fit_calibrated(
        declared,
        train_rows,
        y_train,
        numeric=selection.numeric,
        categorical=selection.categorical,
        estimator=best.estimator,
        params=best.params,
        weights=weights,
        window=split.train_window,
        seed=limits.seed,
    )
    fit_s = time.perf_counter() - started

    # Judge: both models on the same holdout rows.
    provisional = tabular.ServedTabular(_provisional_meta(name, fitted), fitted.pipeline)
    challenger_proba = provisional.proba(holdout_rows)
    challenger_metrics = binary_metrics(y_holdout, challenger_proba, review_rate=limits.review_rate)
    champion = job.champions.get(name)
    champion_proba, champion_metrics, champion_note = _champion_binary(
        job.models_dir, champion, holdout_rows, y_holdout, limits.review_rate
    )
    judged = binary_verdict(champion_metrics, challenger_metrics, margin=limits.margin)
    primary = judged.metric
    reason = judged.reason + (f" ({champion_note})" if champion_note else "")

    # Promoted: the version that serves is refit on every labelled row with the chosen
    # settings (the holdout, the newest rows, included), and recalibrated the same way.
    written, learnt_from, window = fitted, len(split.train), split.train_window
    if judged.promote:
        say(f"{name}: promoted on the holdout; refitting on all {len(rows):,} labelled rows")
        window = (split.train_window[0], split.holdout_window[1])
        written, reference = _refit_on_all(job, name, split, rows, selection, best, window)
        learnt_from = len(rows)
    else:
        reference = tabular_reference(provisional, train_rows, y_train, selection.scores)
    summary = {
        **windows(split),
        "cleaning": cleaning.as_dict(),
        "selection": {
            "kept": [*selection.numeric, *selection.categorical],
            "dropped": list(selection.dropped),
            "scores": {k: round(v, 5) for k, v in selection.scores.items()},
            "importance": {k: round(v, 5) for k, v in selection.importance.items()},
        },
        "candidates": [t.as_dict() for t in found.trials],
        "search": {
            "budget_s": found.budget_s,
            "spent_s": round(found.spent_s, 2),
            "stopped_by_budget": found.stopped_by_budget,
            "best": best.as_dict(),
        },
        "refit_s": round(fit_s, 2),
        "refit_on_all": {"rows": learnt_from} if written is not fitted else None,
        "thresholds": threshold_table(y_holdout, challenger_proba, declared.spec.costs),
        "calibration": {
            "method": written.calibration.method,
            "rows": written.calibration.n,
            "holdout_reliability": [
                [round(m, 4), round(r, 4), n]
                for m, r, n in reliability(y_holdout, challenger_proba)
            ],
        },
        "metric": primary,
        "margin": limits.margin,
    }
    metrics = {**challenger_metrics, "cv_roc_auc": best.cv_score}
    say(f"{name}: writing the challenger")
    meta = artifacts.write_version(
        job.models_dir,
        name,
        Amended(
            written,
            metrics,
            {
                "drift": reference.to_json(),
                "trainer_run": run_id,
                "thresholds": summary["thresholds"],
            },
        ),
        trained_on=f"outcomes: {learnt_from:,} labelled decisions (run {run_id})",
        window=window,
    )
    served = tabular.load(artifacts.verify(job.models_dir, meta), meta)  # loads, or refuses
    importances = _importances(served, holdout_rows)
    return conclude(
        job,
        Judgement(
            name=name,
            run_id=run_id,
            challenger=meta,
            champion=champion,
            promote=judged.promote,
            reason=reason,
            split=split,
            cleaning=cleaning.as_dict(),
            summary=summary,
            champion_metrics=champion_metrics,
            challenger_metrics=challenger_metrics,
            candidates=[t.as_dict() for t in found.trials],
            curves=Curves(
                y_true=[int(v) for v in y_holdout],
                champion=None if champion_proba is None else [float(p) for p in champion_proba],
                challenger=[float(p) for p in challenger_proba],
            ),
            importances=importances,
        ),
        say,
    )


def _refit_on_all(
    job: TrainJob,
    name: str,
    split: Split,
    rows: Sequence[Any],
    selection: Any,
    best: Any,
    window: tuple[str, str],
) -> tuple[Any, drift.DriftReference]:
    """The chosen settings fit on every labelled row (train, then holdout, in time order)
    and calibrated on the newest of them, with its drift reference."""
    limits, ordered = job.limits, [*split.train, *split.holdout]
    y_all = np.asarray([int(bool(e.target)) for e in ordered])
    written = fit_tabular.fit_calibrated(
        job.declared[name],
        rows,
        y_all,
        numeric=selection.numeric,
        categorical=selection.categorical,
        estimator=best.estimator,
        params=best.params,
        weights=sample_weights(
            y_all, [e.occurred_at for e in ordered], half_life_days=limits.half_life_days
        ),
        window=window,
        seed=limits.seed,
    )
    served = tabular.ServedTabular(_provisional_meta(name, written), written.pipeline)
    return written, tabular_reference(served, rows, y_all, selection.scores)


def watched_columns(ranking: dict[str, float], columns: Sequence[str]) -> list[str]:
    """The input columns the drift monitor watches: the most informative ones, leaving
    out features computed from a party's earlier events (``vs_recent_mean(...)``), whose
    share of missing values depends on how much history a window holds, not on the world."""
    usable = [c for c in columns if not c.startswith(features.RECENT + "(")]
    return sorted(usable, key=lambda c: -ranking.get(c, 0.0))[:DRIFT_FEATURES]


def tabular_reference(
    served: Any, rows: Sequence[Any], y: np.ndarray, ranking: dict[str, float]
) -> drift.DriftReference:
    """The training distribution of a tabular model's watched features, its score and
    its label rate: what the drift monitor compares recent decisions with."""
    return drift.build_reference(
        rows,
        watched_columns(ranking, [*served.numeric, *served.categorical]),
        scores=[float(p) for p in served.proba(rows)],
        labels=[bool(v) for v in y],
    )


def first_references(fitted: Any, events: Sequence[Any], labels: Sequence[Any]) -> dict[str, Any]:
    """The drift reference of a first model (trained by ``first.train_first``), as the
    params to add to it: tabular models rank their columns by mutual information here,
    text heads keep their training class mix."""
    if fitted.family == "text":
        return {"drift": drift.build_reference([], [], scores=[str(lb) for lb in labels]).to_json()}
    rows = tabular.rows_in_order(fitted.spec, events)
    y = np.asarray([int(bool(v)) for v in labels])
    served = tabular.ServedTabular(_provisional_meta(fitted.spec.name, fitted), fitted.pipeline)
    ranking = select_features(rows, y, fitted.numeric, fitted.categorical).scores
    return {"drift": tabular_reference(served, rows, y, ranking).to_json()}


def _provisional_meta(name: str, fitted: Any) -> ModelMeta:
    """A description good enough to compile and score a model not yet written."""
    return artifacts.describe(name, fitted, version=0, trained_on="", window=("", ""))


def _champion_binary(
    models_dir: Path,
    champion: ModelMeta | None,
    rows: Sequence[Any],
    y: np.ndarray,
    review_rate: float,
) -> tuple[np.ndarray | None, dict[str, float] | None, str]:
    if champion is None:
        return None, None, "no champion yet"
    try:
        served = load_served(models_dir, champion)
    except Exception as exc:
        return None, None, f"champion {champion.tag} could not be loaded: {exc}"
    assert isinstance(served, tabular.ServedTabular)
    proba = served.proba(rows)
    return proba, binary_metrics(y, proba, review_rate=review_rate), ""


def _importances(served: Any, rows: Sequence[Any]) -> list[tuple[str, float]]:
    """Mean |contribution| in log-odds per feature over the holdout (the explanations'
    own method: exact terms for logistic regression, occlusion for trees)."""
    sample = list(rows[:2000])
    if not sample:
        return []
    found = served.contributions(sample)
    mean = np.abs(found.terms).mean(axis=0)
    order = np.argsort(-mean)[:IMPORTANCES_SHOWN]
    return [(str(found.names[i]), round(float(mean[i]), 5)) for i in order]
