"""One training run, start to finish, on plain data: the part that does the work.

``run_job`` takes a ``TrainJob`` (labelled decisions already read from the ledger, the
champion's description, the limits) and returns one ``ModelResult`` per model: the
challenger written to the models folder (never registered here), both models' metrics
on the same recent holdout, the verdict and the report. It touches no database and no
broker, so it runs the same in the CLI process (``arbiter train``, with a progress bar)
and in a child process of the background trainer (``app.trainer.service``).

The steps, for a tabular model: examples (validate, de-duplicate, drop unusable labels)
→ time split (train on older, hold out the newest) → feature rows in time order →
feature selection (mutual information per input column) → cross-validated, time-bounded
search over logistic regression, gradient boosting and a random forest → refit of the
best on all training rows (class and recency weights) → the champion and the challenger
scored on the holdout → verdict (better by the margin?) → report. The ticket heads
share one encoder pass: their three heads are refit together from agent-confirmed
labels, on the encoder variant the champion serves with.

A crash anywhere leaves at most an unregistered version folder behind (written through
a staging folder, so never a half one): the registry only changes in the caller, after
``run_job`` has returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.inference import artifacts
from app.inference.base import ModelMeta
from app.inference.catalog import MODELS
from app.trainer import drift
from app.trainer.dataset import (
    Example,
    NotEnoughData,
    Split,
    build_examples,
    sample_weights,
    time_split,
)
from app.trainer.evaluate import PRIMARY, binary_metrics, multiclass_metrics, verdict
from app.trainer.report import Confusion, Curves, ReportData, write_report
from app.trainer.search import search, select_features
from schemas import Ticket

Progress = Callable[[str], None]

TEXT_GROUP = "ticket"  # the three ticket heads train together
DRIFT_FEATURES = 6  # the most informative input columns watched for drift, per model
IMPORTANCES_SHOWN = 15


@dataclass(frozen=True)
class Limits:
    """How a run may train and judge (from Settings; plain data for the child process)."""

    budget_s: float = 60.0  # the hyper-parameter search's time budget, per model
    margin: float = 0.005  # how much better (primary metric) a challenger must be
    review_rate: float = 0.05  # the business metric's review share
    holdout_share: float = 0.25
    min_train: int = 200
    min_holdout: int = 100
    max_rows: int | None = 200_000
    text_max_rows: int = 4_000
    half_life_days: float | None = 30.0
    folds: int = 3
    estimators: tuple[str, ...] = ("logreg", "hgb", "forest")
    max_features: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class Record:
    """One labelled decision as the trainer needs it (``LabelledDecision``'s fields)."""

    event_id: str
    event_type: str
    occurred_at: datetime
    payload: dict[str, Any]
    labels: dict[str, Any]


@dataclass(frozen=True)
class TrainJob:
    target: str  # a tabular model name, or "ticket" for the three heads
    trigger: str
    run_ids: dict[str, int]  # model name -> its training_runs row
    records: tuple[Record, ...]
    champions: dict[str, ModelMeta | None]  # model name -> the champion's description
    models_dir: Path
    reports_dir: Path
    limits: Limits = field(default_factory=Limits)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.run_ids)


@dataclass(frozen=True)
class ModelResult:
    model: str
    run_id: int
    status: str  # "trained" (see ``promote``) or "skipped" (not enough data)
    reason: str
    promote: bool = False
    challenger: ModelMeta | None = None  # written, not registered
    champion_version: int | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    report: str = ""


def models_of(target: str) -> tuple[str, ...]:
    """The model names one job trains."""
    if target == TEXT_GROUP:
        return tuple(n for n, family in MODELS.items() if family == "text")
    if MODELS.get(target) == "tabular":
        return (target,)
    if MODELS.get(target) == "text":
        raise ValueError(f"{target} trains with the other ticket heads: train {TEXT_GROUP!r}")
    raise ValueError(f"unknown model {target!r}: use one of {', '.join(MODELS)} or 'ticket'")


def target_of(model: str) -> str:
    """The job that trains ``model``."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: use one of {', '.join(MODELS)}")
    return TEXT_GROUP if MODELS[model] == "text" else model


def run_job(job: TrainJob, on_progress: Progress | None = None) -> list[ModelResult]:
    say = on_progress or (lambda _msg: None)
    if job.target == TEXT_GROUP:
        return _run_text(job, say)
    return [_run_tabular(job, job.target, say)]


# --- tabular ---------------------------------------------------------------------------


def _windows(split: Split) -> dict[str, Any]:
    return {
        "train_window": list(split.train_window),
        "holdout_window": list(split.holdout_window),
        "n_train": len(split.train),
        "n_holdout": len(split.holdout),
    }


def _run_tabular(job: TrainJob, name: str, say: Progress) -> ModelResult:
    from app.inference import tabular

    limits, run_id = job.limits, job.run_ids[name]
    spec = tabular.spec_for(name)
    say(f"{name}: building the dataset from {len(job.records):,} labelled decisions")
    examples, cleaning = build_examples(name, job.records, max_rows=limits.max_rows)
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
    rows = tabular.rows_in_order(spec, [e.event for e in ordered])
    cut = len(split.train)
    train_rows, holdout_rows = rows[:cut], rows[cut:]
    y_train = np.asarray([int(bool(e.target)) for e in split.train])
    y_holdout = np.asarray([int(bool(e.target)) for e in split.holdout])
    weights = sample_weights(
        y_train, [e.occurred_at for e in split.train], half_life_days=limits.half_life_days
    )

    numeric, categorical = tabular.discover_columns(train_rows)
    say(f"{name}: feature selection over {len(numeric) + len(categorical)} input columns")
    selection = select_features(
        train_rows,
        y_train,
        numeric,
        categorical,
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
    say(f"{name}: refitting {best.estimator} {best.params} on all training rows")
    started = time.perf_counter()
    fitted = tabular.fit_rows(
        spec,
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
    primary = PRIMARY["binary"]
    judged = verdict(champion_metrics, challenger_metrics, metric=primary, margin=limits.margin)
    reason = judged.reason + (f" ({champion_note})" if champion_note else "")

    reference = tabular_reference(provisional, train_rows, y_train, selection.scores)
    summary = {
        **_windows(split),
        "cleaning": cleaning.as_dict(),
        "selection": {
            "kept": [*selection.numeric, *selection.categorical],
            "dropped": list(selection.dropped),
            "scores": {k: round(v, 5) for k, v in selection.scores.items()},
        },
        "candidates": [t.as_dict() for t in found.trials],
        "search": {
            "budget_s": found.budget_s,
            "spent_s": round(found.spent_s, 2),
            "stopped_by_budget": found.stopped_by_budget,
            "best": best.as_dict(),
        },
        "refit_s": round(fit_s, 2),
        "metric": primary,
        "margin": limits.margin,
    }
    metrics = {**challenger_metrics, "cv_" + primary: best.cv_score}
    say(f"{name}: writing the challenger")
    meta = artifacts.write_version(
        job.models_dir,
        name,
        Amended(fitted, metrics, {"drift": reference.to_json(), "trainer_run": run_id}),
        trained_on=f"outcomes: {len(split.train):,} labelled decisions (run {run_id})",
        window=split.train_window,
    )
    served = tabular.load(artifacts.verify(job.models_dir, meta), meta)  # loads, or refuses
    importances = _importances(served, holdout_rows)
    say(f"{name}: writing the report")
    report = write_report(
        job.reports_dir / name / f"run-{run_id}",
        ReportData(
            model=name,
            run_id=run_id,
            trigger=job.trigger,
            decision="promoted" if judged.promote else "kept",
            reason=reason,
            champion_version=champion.version if champion else None,
            challenger_version=meta.version,
            train_window=split.train_window,
            holdout_window=split.holdout_window,
            n_train=len(split.train),
            n_holdout=len(split.holdout),
            cleaning=cleaning.as_dict(),
            candidates=[t.as_dict() for t in found.trials],
            champion_metrics=champion_metrics or {},
            challenger_metrics=challenger_metrics,
            curves=Curves(
                y_true=[int(v) for v in y_holdout],
                champion=None if champion_proba is None else [float(p) for p in champion_proba],
                challenger=[float(p) for p in challenger_proba],
            ),
            importances=importances,
        ),
    )
    return ModelResult(
        name,
        run_id,
        "trained",
        reason,
        promote=judged.promote,
        challenger=meta,
        champion_version=champion.version if champion else None,
        champion_metrics=champion_metrics or {},
        challenger_metrics=challenger_metrics,
        summary=summary,
        report=str(report),
    )


@dataclass(frozen=True)
class Amended:
    """A fitted model (``base.Fitted``) with the trainer's metrics and extra params (the
    drift reference, the run) in place of its own."""

    inner: Any
    metrics: dict[str, float]
    extra: dict[str, Any]

    @property
    def family(self) -> str:
        return str(self.inner.family)

    @property
    def kind(self) -> str:
        return str(self.inner.kind)

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.inner.features)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.inner.classes)

    @property
    def params(self) -> dict[str, Any]:
        return {**self.inner.params, **self.extra}

    def write(self, folder: Path) -> list[str]:
        return list(self.inner.write(folder))


def watched_columns(ranking: dict[str, float], columns: Sequence[str]) -> list[str]:
    """The input columns the drift monitor watches: the most informative ones, leaving
    out features computed from a party's earlier events (``*_vs_recent``), whose share
    of missing values depends on how much history a window holds, not on the world."""
    usable = [c for c in columns if not c.endswith("_vs_recent")]
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
    """The drift reference of a first model (trained by ``lifecycle.train_first``), as the
    params to add to it: tabular models rank their columns by mutual information here,
    text heads keep their training class mix."""
    if fitted.family == "text":
        return {"drift": drift.build_reference([], [], scores=[str(lb) for lb in labels]).to_json()}
    from app.inference import tabular

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
    from app.inference import tabular
    from app.inference.loading import load_served

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


# --- ticket heads ----------------------------------------------------------------------


def _run_text(job: TrainJob, say: Progress) -> list[ModelResult]:
    from app.inference import features, text

    limits = job.limits
    names = job.models
    # One dataset for the three heads: tickets whose outcome settles every label.
    per_head: dict[str, dict[str, Example]] = {}
    cleaning: dict[str, dict[str, int]] = {}
    for name in names:
        examples, clean = build_examples(name, job.records, max_rows=None)
        per_head[name] = {e.event_id: e for e in examples}
        cleaning[name] = clean.as_dict()
    common = set.intersection(*(set(found) for found in per_head.values()))
    first = per_head[names[0]]
    examples = sorted((first[i] for i in common), key=lambda e: (e.occurred_at, e.event_id))
    examples = examples[-limits.text_max_rows :]
    try:
        split = time_split(
            examples,
            holdout_share=limits.holdout_share,
            min_train=limits.min_train,
            min_holdout=limits.min_holdout,
            need_both_classes=False,
        )
    except NotEnoughData as exc:
        return [
            ModelResult(n, job.run_ids[n], "skipped", str(exc), summary={"cleaning": cleaning[n]})
            for n in names
        ]
    ordered = [*split.train, *split.holdout]
    tickets = [e.event for e in ordered]
    labels = [{_label(n): str(per_head[n][e.event_id].target) for n in names} for e in ordered]
    champions = {n: job.champions.get(n) for n in names}
    variant = next(
        (str(m.params.get("variant")) for m in champions.values() if m is not None),
        "fp32",
    )
    say(f"ticket heads: fitting on {len(split.train):,} tickets ({variant} encoder)")
    fitted = text.fit_all(
        [t for t in tickets if isinstance(t, Ticket)],
        labels,
        only=variant,
        on_progress=say,
    )
    holdout_texts = [
        features.ticket_text(e.event) for e in split.holdout if isinstance(e.event, Ticket)
    ]
    shared = _Holdout(split, holdout_texts, per_head, {})
    return [_judge_head(job, name, fitted[name], shared, cleaning[name], say) for name in names]


def _label(model: str) -> str:
    return model.split(".", 1)[1]


@dataclass(frozen=True)
class _Holdout:
    """What the three heads are judged on, shared: the split, the holdout texts, each
    head's examples by event id and the holdout embeddings per encoder variant."""

    split: Split
    texts: list[str]
    per_head: dict[str, dict[str, Example]]
    embedded: dict[str, Any]


def _judge_head(
    job: TrainJob, name: str, fitted: Any, shared: _Holdout, cleaning: dict[str, int], say: Progress
) -> ModelResult:
    from app.inference import text
    from app.inference.loading import load_served

    split, texts, per_head, embedded = shared.split, shared.texts, shared.per_head, shared.embedded
    limits, run_id = job.limits, job.run_ids[name]
    y_true = [str(per_head[name][e.event_id].target) for e in split.holdout]
    say(f"{name}: writing the challenger")
    train_classes = [str(per_head[name][e.event_id].target) for e in split.train]
    reference = drift.build_reference([], [], scores=train_classes)
    meta = artifacts.write_version(
        job.models_dir,
        name,
        Amended(
            fitted, dict(fitted.metrics), {"drift": reference.to_json(), "trainer_run": run_id}
        ),
        trained_on=f"agent-confirmed tickets: {len(split.train):,} (run {run_id})",
        window=split.train_window,
    )
    challenger = load_served(job.models_dir, meta)
    assert isinstance(challenger, text.ServedText)
    proba = _head_proba(challenger, texts, embedded)
    challenger_metrics = multiclass_metrics(y_true, proba, challenger.head.classes)
    predicted = [challenger.head.classes[i] for i in proba.argmax(axis=1)]
    champion = job.champions.get(name)
    champion_metrics: dict[str, float] | None = None
    champion_predicted: list[str] | None = None
    note = "no champion yet" if champion is None else ""
    if champion is not None:
        try:
            served = load_served(job.models_dir, champion)
            assert isinstance(served, text.ServedText)
            champ_proba = _head_proba(served, texts, embedded)
            champion_metrics = multiclass_metrics(y_true, champ_proba, served.head.classes)
            champion_predicted = [served.head.classes[i] for i in champ_proba.argmax(axis=1)]
        except Exception as exc:
            note = f"champion {champion.tag} could not be loaded: {exc}"
    primary = PRIMARY["multiclass"]
    judged = verdict(champion_metrics, challenger_metrics, metric=primary, margin=limits.margin)
    reason = judged.reason + (f" ({note})" if note else "")
    summary = {**_windows(split), "cleaning": cleaning, "metric": primary, "margin": limits.margin}
    report = write_report(
        job.reports_dir / name / f"run-{run_id}",
        ReportData(
            model=name,
            run_id=run_id,
            trigger=job.trigger,
            decision="promoted" if judged.promote else "kept",
            reason=reason,
            champion_version=champion.version if champion else None,
            challenger_version=meta.version,
            train_window=split.train_window,
            holdout_window=split.holdout_window,
            n_train=len(split.train),
            n_holdout=len(split.holdout),
            cleaning=cleaning,
            candidates=[],
            champion_metrics=champion_metrics or {},
            challenger_metrics=challenger_metrics,
            confusions=[
                Confusion(
                    head=name,
                    classes=list(challenger.head.classes),
                    y_true=y_true,
                    champion=champion_predicted,
                    challenger=predicted,
                )
            ],
        ),
    )
    return ModelResult(
        name,
        run_id,
        "trained",
        reason,
        promote=judged.promote,
        challenger=meta,
        champion_version=champion.version if champion else None,
        champion_metrics=champion_metrics or {},
        challenger_metrics=challenger_metrics,
        summary=summary,
        report=str(report),
    )


def _head_proba(served: Any, texts: list[str], embedded: dict[str, Any]) -> np.ndarray:
    """The full head's class probabilities (embedding and TF-IDF), in its class order;
    the holdout is encoded once per encoder variant (``embedded`` caches it)."""
    variant = str(served.variant)
    if variant not in embedded:
        embedded[variant] = served.embed(texts)
    return np.asarray(served.head.proba(embedded[variant], served.lexical(texts)))
