"""Fitting a tabular model (a declared model of ``kind: tabular``): one scikit-learn
Pipeline, the artifact that ``app.inference.tabular`` loads and serves.

- ``fit`` (first models, tests, benchmarks): the columns are discovered from the rows
  (event attributes included), the data is split by time (oldest 75 % train, newest
  25 % holdout), the rare class is weighted up, and one ``Pipeline`` is fitted: median
  imputation, clipping to training quantiles and scaling of numbers, one-hot encoding of
  categories with an "other" bucket for rare and unseen values, then the estimator
  ("hgb", "logreg" or "forest"). The Pipeline is the artifact (``model.skops``).
- ``fit_rows`` is the fitting step alone (given rows, outcomes, columns,
  hyper-parameters and weights): the trainer's run (``job_tabular``) chooses those
  itself and calls it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from app.declarations.spec import DeclaredModel
from app.inference import features
from app.inference.calibration import Calibration
from app.inference.features import Row
from app.inference.tabular import (
    COLUMNS,
    MODEL_FILE,
    QuantileClipper,
    pipeline_input,
    rows_in_order,
)
from app.inference.tabular_fast import one_openmp_thread
from app.trainer.jobs.calibrate import (
    CALIBRATION_FOLDS,
    CROSS_FIT_BELOW,
    calibration_cut,
    fit_calibration,
)
from app.trainer.jobs.dataset import target
from app.trainer.jobs.evaluate import binary_metrics, threshold_table
from schemas import EventCore

Array = npt.NDArray[Any]

ESTIMATORS = ("hgb", "logreg", "forest")
HOLDOUT_SHARE = 0.25
MIN_COVERAGE = 0.01  # an attribute present in fewer training rows is noise, not a column
MIN_CATEGORY_SHARE = 0.005  # rarer categories share the "other" (infrequent) column
MAX_CATEGORIES = 32  # per categorical column, the "other" column included


def build_pipeline(numeric: Sequence[str], categorical: Sequence[str], estimator: Any) -> Pipeline:
    """Cleaning, encoding and the estimator as one Pipeline.

    Its input is ``pipeline_input(rows, numeric, categorical)``: a 2-D object array, the
    numeric columns first. Its output feature names are the input names for numbers and
    ``<name>_<category>`` (``<name>_infrequent_sklearn`` = other) for categories.
    """
    n_num = len(numeric)
    parts: list[tuple[str, Any, list[int]]] = []
    if numeric:
        numbers = Pipeline(
            [
                ("impute", SimpleImputer(strategy="median")),
                ("clip", QuantileClipper()),
                ("scale", StandardScaler()),
            ]
        )
        parts.append(("numeric", numbers, list(range(n_num))))
    if categorical:
        onehot = OneHotEncoder(
            handle_unknown="infrequent_if_exist",
            min_frequency=MIN_CATEGORY_SHARE,
            max_categories=MAX_CATEGORIES,
            sparse_output=False,
        )
        parts.append(("categorical", onehot, list(range(n_num, n_num + len(categorical)))))
    prepare = ColumnTransformer(parts, sparse_threshold=0.0, verbose_feature_names_out=False)
    return Pipeline([("prepare", prepare), ("model", estimator)])


def make_estimator(name: str, seed: int = 0, **params: Any) -> Any:
    """The estimators the trainer compares; modest sizes so a refit takes seconds.

    ``params`` override the defaults below (the first setting the trainer's search tries);
    a name the estimator does not take is refused with the ones it does.
    """
    estimator: Any
    if name == "hgb":
        estimator = HistGradientBoostingClassifier(
            max_iter=150,
            learning_rate=0.08,
            max_leaf_nodes=15,
            l2_regularization=1.0,
            random_state=seed,
        )
    elif name == "logreg":
        estimator = LogisticRegression(C=1.0, max_iter=2_000)
    elif name == "forest":
        estimator = RandomForestClassifier(
            n_estimators=80, max_depth=10, min_samples_leaf=5, n_jobs=1, random_state=seed
        )
    else:
        raise ValueError(f"unknown estimator {name!r}: use one of {', '.join(ESTIMATORS)}")
    if params:
        allowed = sorted(estimator.get_params(deep=False))
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(
                f"estimator {name!r} takes no parameter {', '.join(map(repr, unknown))}: "
                f"use any of {', '.join(allowed)}"
            )
        estimator.set_params(**params)
    return estimator


def discover_columns(rows: Sequence[Row]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Numeric and categorical columns of ``rows``: any string value makes a column
    categorical; all-missing columns and attributes in under ``MIN_COVERAGE`` of the rows
    are left out. Base features keep their order; attributes follow, sorted."""
    present: dict[str, int] = {}
    textual: set[str] = set()
    for row in rows:
        for name, value in row.items():
            if value is None:
                present.setdefault(name, 0)
                continue
            present[name] = present.get(name, 0) + 1
            if isinstance(value, str):
                textual.add(name)
    floor = MIN_COVERAGE * len(rows)
    kept = [
        name
        for name, count in present.items()
        if count and (count >= floor or not name.startswith(features.ATTRIBUTE_PREFIX))
    ]
    names = [n for n in kept if not n.startswith(features.ATTRIBUTE_PREFIX)]
    names += sorted(n for n in kept if n.startswith(features.ATTRIBUTE_PREFIX))
    numeric = tuple(n for n in names if n not in textual)
    categorical = tuple(n for n in names if n in textual)
    return numeric, categorical


@dataclass(frozen=True)
class FittedTabular:
    """A freshly trained tabular model (``base.Fitted``); ``write`` stores the Pipeline."""

    spec: DeclaredModel
    pipeline: Pipeline
    estimator: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    features: tuple[str, ...]
    metrics: dict[str, float]
    reference: dict[str, float | str]  # per input column: training median / most frequent
    means: tuple[float, ...]  # per output feature: its mean over the training rows
    window: tuple[str, str]  # occurred_at (ISO) of the first and last training event
    fit_seconds: float
    estimator_params: dict[str, Any] = field(default_factory=dict)  # over make_estimator's
    calibration: Calibration = field(default_factory=Calibration)
    thresholds: list[dict[str, Any]] = field(default_factory=list)  # on its holdout

    @property
    def family(self) -> str:
        return "tabular"

    @property
    def kind(self) -> str:
        return "binary"

    @property
    def classes(self) -> tuple[str, ...]:
        return ()

    @property
    def params(self) -> dict[str, Any]:
        """What serving needs beside the Pipeline (goes into ``ModelMeta.params``)."""
        return {
            "estimator": self.estimator,
            "score": self.spec.score,
            "columns": COLUMNS,
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "reference": dict(self.reference),
            "means": list(self.means),
            "estimator_params": dict(self.estimator_params),
            "calibration": self.calibration.to_json(),
            "thresholds": list(self.thresholds),
        }

    def write(self, folder: Path) -> list[str]:
        sio.dump(self.pipeline, folder / MODEL_FILE)
        return [MODEL_FILE]


def _reference(
    rows: Sequence[Row], numeric: Sequence[str], categorical: Sequence[str]
) -> dict[str, float | str]:
    """Each column's typical training value: the median number, the most frequent category."""
    reference: dict[str, float | str] = {}
    data = pipeline_input(rows, numeric, categorical)
    for j, name in enumerate(numeric):
        reference[name] = float(np.nanmedian(data[:, j].astype(np.float64)))
    for j, name in enumerate(categorical, start=len(numeric)):
        values, counts = np.unique(data[:, j].astype(str), return_counts=True)
        reference[name] = str(values[int(np.argmax(counts))])  # ties: first in sort order
    return reference


def _outcome(label: Mapping[str, Any] | bool, model: DeclaredModel) -> bool:
    if not isinstance(label, Mapping):
        return bool(label)
    found = target(model, label)
    if not isinstance(found, bool):
        raise ValueError(f"{model.name}: the labels {dict(label)} say nothing it can learn")
    return found


def imbalance_weights(y: Array) -> Array:
    """Per row, 1 for negatives and ``sqrt(negatives / positives)`` for positives.

    The rare class is weighted up by the square root of the imbalance so that scores are
    usable at low prevalence without swamping the calibration. With a single class every
    weight is 1.
    """
    y = np.asarray(y).astype(bool)
    positives = int(y.sum())
    if positives in (0, len(y)):
        return np.ones(len(y))
    weights: Array = np.where(y, np.sqrt((len(y) - positives) / positives), 1.0)
    return weights


def fit_rows(
    spec: DeclaredModel,
    rows: Sequence[Row],
    y: Array,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    estimator: str = "hgb",
    params: Mapping[str, Any] | None = None,
    weights: Array | None = None,
    window: tuple[str, str],
    seed: int = 0,
) -> FittedTabular:
    """Fit one Pipeline on ``rows`` (``y``: 1 = positive) and describe it; no metrics.

    ``params`` override ``estimator``'s defaults (``make_estimator``) and are recorded in
    ``params["estimator_params"]``; ``weights`` default to ``imbalance_weights(y)``;
    ``window`` is the ISO first/last ``occurred_at`` of the rows (for the registry).
    """
    y = np.asarray(y, dtype=int)
    if len(rows) != len(y):
        raise ValueError(f"{len(rows)} rows but {len(y)} outcomes")
    if weights is None:
        weights = imbalance_weights(y)
    elif len(weights) != len(y):
        raise ValueError(f"{len(y)} outcomes but {len(weights)} weights")
    chosen = dict(params or {})
    numeric, categorical = tuple(numeric), tuple(categorical)
    x = pipeline_input(rows, numeric, categorical)
    pipeline = build_pipeline(numeric, categorical, make_estimator(estimator, seed, **chosen))
    # One OpenMP thread: training shares the cores with the consume loop, and two
    # OpenMP threads under that contention made a 1.2 s HGB fit take 10-44 s (measured).
    with one_openmp_thread():
        started = time.perf_counter()
        pipeline.fit(x, y, model__sample_weight=weights)
        fit_seconds = time.perf_counter() - started
    prepare = pipeline[:-1]
    names = tuple(str(n) for n in prepare.get_feature_names_out([*numeric, *categorical]))
    means = tuple(float(m) for m in prepare.transform(x).mean(axis=0))
    return FittedTabular(
        spec=spec,
        pipeline=pipeline,
        estimator=estimator,
        numeric=numeric,
        categorical=categorical,
        features=names,
        metrics={},
        reference=_reference(rows, numeric, categorical),
        means=means,
        window=window,
        fit_seconds=fit_seconds,
        estimator_params=_json_safe(chosen),
    )


def fit_calibrated(
    spec: DeclaredModel,
    rows: Sequence[Row],
    y: Array,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    estimator: str = "hgb",
    params: Mapping[str, Any] | None = None,
    weights: Array | None = None,
    window: tuple[str, str],
    seed: int = 0,
) -> FittedTabular:
    """``fit_rows`` on every row, with a calibration learnt on rows the fit did not see.

    ``rows`` are in time order. Fits with the same settings that did not see a row score
    it (``_held_out_scores``: every row out of fold on small data, the newest fifth on
    large), and the map from those raw scores to the outcomes, unweighted (the event mix
    as it came), is the calibration of the final fit on all rows. Without both outcomes:
    no calibration.
    """
    y = np.asarray(y, dtype=int)
    if weights is None:
        weights = imbalance_weights(y)
    common: dict[str, Any] = {
        "numeric": numeric,
        "categorical": categorical,
        "estimator": estimator,
        "params": params,
        "window": window,
        "seed": seed,
    }
    raw, truth = _held_out_scores(spec, rows, y, weights, common)
    calibration = Calibration("none", n=0)
    if len(truth) and 0 < truth.sum() < len(truth):
        calibration = fit_calibration(raw, truth)
    final = fit_rows(spec, rows, y, weights=weights, **common)
    return replace(final, calibration=calibration)


def _held_out_scores(
    spec: DeclaredModel,
    rows: Sequence[Row],
    y: Array,
    weights: Array,
    common: Mapping[str, Any],
) -> tuple[Array, Array]:
    """Raw scores of rows by fits that did not see them, with their outcomes: under
    ``CROSS_FIT_BELOW`` rows every row, out of fold (``CALIBRATION_FOLDS`` blocks in time
    order, each scored by a fit on the others); above, the newest
    ``CALIBRATION_SHARE`` scored by a fit on the older rows."""
    n = len(rows)
    if n >= CROSS_FIT_BELOW:
        blocks = [(calibration_cut(n), n)]
    else:
        edges = np.linspace(0, n, CALIBRATION_FOLDS + 1).astype(int)
        blocks = list(itertools.pairwise(edges.tolist()))
    scores: list[Array] = []
    truths: list[Array] = []
    for start, stop in blocks:
        keep = np.r_[0:start, stop:n]
        if stop <= start or not 0 < y[keep].sum() < len(keep):
            continue  # a fit needs both outcomes
        fit = fit_rows(spec, [rows[i] for i in keep], y[keep], weights=weights[keep], **common)
        x = pipeline_input(rows[start:stop], fit.numeric, fit.categorical)
        with one_openmp_thread():
            scores.append(fit.pipeline.predict_proba(x)[:, 1])
        truths.append(y[start:stop])
    if not scores:
        return np.empty(0), np.empty(0, dtype=int)
    return np.concatenate(scores), np.concatenate(truths)


def _json_safe(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as JSON values (numpy scalars become Python numbers)."""
    return {str(k): v.item() if isinstance(v, np.generic) else v for k, v in params.items()}


def fit(
    spec: DeclaredModel,
    events: Sequence[EventCore],
    labels: Sequence[Mapping[str, Any] | bool],
    *,
    estimator: str = "hgb",
    seed: int = 0,
) -> FittedTabular:
    """Train ``estimator`` on the oldest 75 % of ``events``; measure on the newest 25 %.

    ``labels``: per event, its outcome (``True`` = positive) or its labels, read as the
    declaration's ``predicts:`` says (what ``simulator.generate.training_set`` returns).
    """
    if len(events) != len(labels):
        raise ValueError(f"{len(events)} events but {len(labels)} labels")
    order = sorted(range(len(events)), key=lambda i: events[i].occurred_at)
    ordered = [events[i] for i in order]
    y_all = np.asarray([_outcome(labels[i], spec) for i in order], dtype=int)
    cut = int(len(ordered) * (1 - HOLDOUT_SHARE))
    y_train, y_test = y_all[:cut], y_all[cut:]
    positives = int(y_train.sum())
    if positives == 0 or positives == len(y_train) or len(y_test) == 0:
        raise ValueError(
            f"{spec.name}: need both outcomes in the oldest 75 % and a holdout; got "
            f"{positives} positive of {len(y_train)} training events, {len(y_test)} holdout"
        )
    # Features in time order with a fresh history, as serving computes them.
    rows = rows_in_order(spec, ordered)
    numeric, categorical = discover_columns(rows[:cut])
    fitted = fit_calibrated(
        spec,
        rows[:cut],
        y_train,
        numeric=numeric,
        categorical=categorical,
        estimator=estimator,
        window=(ordered[0].occurred_at.isoformat(), ordered[cut - 1].occurred_at.isoformat()),
        seed=seed,
    )
    x_test = pipeline_input(rows[cut:], numeric, categorical)
    with one_openmp_thread():
        proba = fitted.calibration.apply(fitted.pipeline.predict_proba(x_test)[:, 1])
    metrics = binary_metrics(y_test, proba)  # ranking metrics only with both outcomes
    thresholds = threshold_table(y_test, proba, spec.spec.costs)
    return replace(fitted, metrics=metrics, thresholds=thresholds)
