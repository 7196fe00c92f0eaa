"""Choosing a tabular challenger: which input columns, which estimator, which settings.

Where it sits: the trainer has the training part of a time split as feature rows
(``tabular.rows_in_order``), outcomes and weights (``dataset``). ``select_features``
drops input columns that carry no information about the outcome; ``search`` then
cross-validates estimator settings on those columns within a time budget and returns
the best, which the trainer refits with ``fit_tabular.fit_rows`` and judges on the holdout.

Both work on the Pipeline's *input* columns, so the model they lead to is served by the
same Pipeline and numpy fast path as any other.

Cross-validation follows time (``TimeSeriesSplit``): every fold trains on older rows and
validates on the rows after them, the question the holdout asks too.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.feature_selection import mutual_info_classif
from sklearn.inspection import permutation_importance
from sklearn.metrics import get_scorer
from sklearn.model_selection import TimeSeriesSplit

from app.inference import tabular
from app.inference.features import Row
from app.inference.tabular_fast import one_openmp_thread
from app.trainer.jobs import fit_tabular
from app.trainer.jobs.dataset import NotEnoughData

Array = npt.NDArray[Any]

SELECTION_ROWS = 20_000  # mutual information is estimated on at most this many recent rows
MAX_FIT_ROWS = 200_000
MAX_DISCRETE = 32  # an integer-valued column with at most this many values is discrete
# Shuffling any column a model uses costs it a little on later rows, noise included (its
# splits were fit to the training rows): half a point of ROC-AUC is "it helps".
MIN_IMPORTANCE = 0.005


# --- feature selection -----------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The input columns kept (in their original order), every column's score, the rest."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    scores: dict[str, float]  # mutual information with the outcome, in nats
    dropped: tuple[str, ...]
    # ROC-AUC lost when the column is shuffled in a model of all of them (later rows):
    # what a column adds together with the others, which its own score cannot see.
    importance: dict[str, float] = field(default_factory=dict)


def _codes(column: Array) -> Array:
    """A categorical column as integer codes (one per distinct string)."""
    _, codes = np.unique(column.astype(str), return_inverse=True)
    return np.asarray(codes, dtype=np.float64)


def select_features(
    rows: Sequence[Row],
    y: Array,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    max_features: int | None = None,
    min_score: float = 1e-3,
    min_importance: float = MIN_IMPORTANCE,
    seed: int = 0,
    sample: int | None = SELECTION_ROWS,
    forced: Sequence[str] = (),
) -> Selection:
    """Keep the input columns that say something about ``y``, alone or together: whose
    mutual information with ``y`` is at least ``min_score``, or whose shuffling costs a
    model of every column at least ``min_importance`` ROC-AUC on later rows
    (``_importance``: a column useful only beside another, as a student flag beside the
    balance, has no information alone).
    At most ``max_features`` by mutual information, the best one whatever its score,
    and the ``forced`` ones always (a declaration's ``keep:``).

    Numbers are median-imputed (an all-missing column scores 0); categories, and
    integer-valued numbers with few values (flags, counts), are scored as discrete, with
    the estimate's bias on independent data subtracted (floored at 0). ``sample``: only
    the most recent rows are scored (rows are in time order), which bounds the
    nearest-neighbour estimate's cost on large data.
    """
    names = (*numeric, *categorical)
    if not names:
        raise ValueError("no columns to select from")
    if len(rows) != len(y):
        raise ValueError(f"{len(rows)} rows but {len(y)} outcomes")
    if max_features is not None and max_features < 1:
        raise ValueError(f"max_features must be >= 1 or None, got {max_features}")
    if sample is not None:
        rows, y = rows[-sample:], np.asarray(y)[-sample:]
    data = tabular.pipeline_input(rows, numeric, categorical)
    matrix = np.zeros(data.shape, dtype=np.float64)
    discrete = np.zeros(len(names), dtype=bool)
    for j in range(len(numeric)):
        values = data[:, j].astype(np.float64)
        missing = np.isnan(values)
        if not missing.all():
            matrix[:, j] = np.where(missing, np.median(values[~missing]), values)
        # Flags and small counts are discrete: the nearest-neighbour estimate for
        # continuous columns is unreliable on values that tie this much.
        distinct = np.unique(matrix[:, j])
        discrete[j] = len(distinct) <= MAX_DISCRETE and bool(np.all(distinct == np.round(distinct)))
    for j in range(len(numeric), len(names)):
        matrix[:, j] = _codes(data[:, j])
        discrete[j] = True
    target = np.asarray(y)
    found = mutual_info_classif(matrix, target, discrete_features=discrete, random_state=seed)
    # The plug-in estimate on discrete columns is biased up by about
    # (values - 1)(classes - 1) / 2n nats even for pure noise (Miller-Madow): subtract
    # it, or a noise column with many values would pass ``min_score``.
    classes, size = len(np.unique(target)), max(len(target), 1)
    for column in np.flatnonzero(discrete).tolist():
        bias = (len(np.unique(matrix[:, column])) - 1) * (classes - 1) / (2 * size)
        found[column] = max(0.0, found[column] - bias)
    scores = {name: float(score) for name, score in zip(names, found, strict=True)}
    importance = _importance(rows, target, numeric, categorical, seed)
    ranked = sorted(names, key=lambda n: -scores[n])  # stable: ties keep column order
    useful = [
        n for n in ranked if scores[n] >= min_score or importance.get(n, 0.0) >= min_importance
    ]
    best = useful or ranked[:1]
    kept = set(best[:max_features] if max_features is not None else best)
    kept |= {n for n in forced if n in names}
    return Selection(
        numeric=tuple(n for n in numeric if n in kept),
        categorical=tuple(n for n in categorical if n in kept),
        scores=scores,
        dropped=tuple(n for n in names if n not in kept),
        importance=importance,
    )


IMPORTANCE_REPEATS = 5
IMPORTANCE_HOLDOUT = 0.3


def _importance(
    rows: Sequence[Row], y: Array, numeric: Sequence[str], categorical: Sequence[str], seed: int
) -> dict[str, float]:
    """Per column, the ROC-AUC a gradient-boosting model of every column loses on the
    later ``IMPORTANCE_HOLDOUT`` of the rows when that column is shuffled, less the
    spread over ``IMPORTANCE_REPEATS`` shuffles: above 0 only when it helps every time.
    Empty when a part holds one outcome only."""
    cut = int(len(rows) * (1 - IMPORTANCE_HOLDOUT))
    y = np.asarray(y).astype(int)
    if not (0 < y[:cut].sum() < cut and 0 < y[cut:].sum() < len(y) - cut):
        return {}
    data = tabular.pipeline_input(rows, numeric, categorical)
    model = fit_tabular.build_pipeline(
        numeric, categorical, fit_tabular.make_estimator("hgb", seed)
    )
    with one_openmp_thread():
        model.fit(data[:cut], y[:cut], model__sample_weight=fit_tabular.imbalance_weights(y[:cut]))
        found = permutation_importance(
            model,
            data[cut:],
            y[cut:],
            scoring="roc_auc",
            n_repeats=IMPORTANCE_REPEATS,
            random_state=seed,
        )
    names = (*numeric, *categorical)
    return {
        name: float(mean - spread)
        for name, mean, spread in zip(
            names, found.importances_mean, found.importances_std, strict=True
        )
    }


# --- hyper-parameter search ------------------------------------------------------------


def _grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in product(*axes.values())]


def _default_first(default: dict[str, Any], grid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [default, *(g for g in grid if g != default)]


# Per estimator, the settings ``search`` tries; the first is ``make_estimator``'s default.
SPACE: dict[str, list[dict[str, Any]]] = {
    "logreg": _default_first({"C": 1.0}, _grid(C=[0.1, 0.3, 1.0, 3.0, 10.0])),
    "hgb": _default_first(
        {"learning_rate": 0.08, "max_leaf_nodes": 15, "max_iter": 150},
        _grid(
            learning_rate=[0.05, 0.08, 0.15], max_leaf_nodes=[7, 15, 31], max_iter=[100, 150, 250]
        ),
    ),
    "forest": _default_first(
        {"n_estimators": 80, "max_depth": 10, "min_samples_leaf": 5},
        _grid(n_estimators=[60, 120], max_depth=[6, 10, None], min_samples_leaf=[2, 5, 10]),
    ),
}


@dataclass(frozen=True)
class Trial:
    """One setting cross-validated: its mean and spread over the folds it was scored on."""

    estimator: str
    params: dict[str, Any]
    cv_score: float  # nan when no fold could be scored
    cv_std: float
    seconds: float
    folds: int  # folds scored

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (nan becomes None)."""

        def number(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "estimator": self.estimator,
            "params": dict(self.params),
            "cv_score": number(self.cv_score),
            "cv_std": number(self.cv_std),
            "seconds": self.seconds,
            "folds": self.folds,
        }


@dataclass(frozen=True)
class SearchResult:
    """The best trial, every trial in the order run, and how the time budget went."""

    best: Trial
    trials: tuple[Trial, ...]
    budget_s: float
    spent_s: float
    stopped_by_budget: bool  # some settings were left untried for lack of time


def time_folds(
    n: int, folds: int, *, max_fit_rows: int = MAX_FIT_ROWS
) -> list[tuple[Array, Array]]:
    """``TimeSeriesSplit`` over ``n`` rows in time order: per fold, the training indices
    (at most the ``max_fit_rows`` most recent before the validation part) and the
    validation indices, all later than the training ones."""
    if max_fit_rows < 1:
        raise ValueError(f"max_fit_rows must be >= 1, got {max_fit_rows}")
    splitter = TimeSeriesSplit(n_splits=folds)
    return [(train[-max_fit_rows:], val) for train, val in splitter.split(np.empty((n, 1)))]


def _units(estimator: str, params: dict[str, Any]) -> float:
    """A setting's relative cost within its estimator: what the time estimate scales by."""
    if estimator == "hgb":
        return float(params.get("max_iter", 150) * params.get("max_leaf_nodes", 15))
    if estimator == "forest":
        depth = params.get("max_depth", 10)
        return float(params.get("n_estimators", 80) * (depth if depth is not None else 16))
    return 1.0


def _plan(estimators: Sequence[str], seed: int) -> list[tuple[str, dict[str, Any]]]:
    """Every estimator's default first, then the other settings in a seeded random order."""
    first = [(name, dict(SPACE[name][0])) for name in estimators]
    rest = [(name, dict(params)) for name in estimators for params in SPACE[name][1:]]
    random.Random(seed).shuffle(rest)
    return first + rest


def search(
    x: Array,
    y: Array,
    weights: Array,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    estimators: Sequence[str] = ("logreg", "hgb", "forest"),
    budget_s: float = 60.0,
    folds: int = 3,
    seed: int = 0,
    scoring: str = "roc_auc",
    on_trial: Callable[[Trial], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    max_fit_rows: int = MAX_FIT_ROWS,
) -> SearchResult:
    """Cross-validate settings from ``SPACE`` on ``x`` (``tabular.pipeline_input``, rows
    in time order) and return the best by mean ``scoring`` over the folds.

    Each estimator's default runs first, whatever the budget, so every family is tried.
    After that a setting is started only if, at the seconds per unit of cost its
    estimator has taken so far, it would end before ``budget_s`` is spent. A fold whose
    training or validation part holds one class is not scored.
    """
    unknown = [e for e in estimators if e not in SPACE]
    if unknown or not estimators:
        raise ValueError(f"unknown estimators {unknown}: use some of {', '.join(SPACE)}")
    if not len(x) == len(y) == len(weights):
        raise ValueError(f"{len(x)} rows, {len(y)} outcomes and {len(weights)} weights")
    if budget_s < 0:
        raise ValueError(f"budget_s must be >= 0, got {budget_s}")
    y, weights = np.asarray(y), np.asarray(weights, dtype=np.float64)
    scorer = get_scorer(scoring)
    usable = [
        (train, val)
        for train, val in time_folds(len(y), folds, max_fit_rows=max_fit_rows)
        if len(np.unique(y[train])) > 1 and len(np.unique(y[val])) > 1
    ]
    if not usable:
        raise NotEnoughData(
            f"none of the {folds} time-ordered folds of {len(y)} examples has both outcomes "
            "in its training and validation parts: wait for more outcomes"
        )

    def run(estimator: str, params: dict[str, Any]) -> Trial:
        started = clock()
        scores: list[float] = []
        for train, val in usable:
            model = fit_tabular.make_estimator(estimator, seed, **params)
            pipeline = fit_tabular.build_pipeline(numeric, categorical, model)
            with one_openmp_thread():  # see fit_tabular.fit_rows
                pipeline.fit(x[train], y[train], model__sample_weight=weights[train])
                scores.append(float(scorer(pipeline, x[val], y[val])))
        return Trial(
            estimator=estimator,
            params=params,
            cv_score=float(np.mean(scores)),
            cv_std=float(np.std(scores)),
            seconds=clock() - started,
            folds=len(scores),
        )

    started = clock()
    deadline = started + budget_s
    rates: dict[str, float] = {}  # per estimator, the most seconds per unit seen
    trials: list[Trial] = []
    stopped = False
    for estimator, params in _plan(estimators, seed):
        if estimator in rates:  # not its first trial: only within the budget
            now = clock()
            if now >= deadline:
                stopped = True
                break
            if now + rates[estimator] * _units(estimator, params) > deadline:
                stopped = True
                continue
        trial = run(estimator, params)
        rate = trial.seconds / _units(estimator, params)
        rates[estimator] = max(rates.get(estimator, 0.0), rate)
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
    scored = [t for t in trials if not math.isnan(t.cv_score)]
    if not scored:
        raise NotEnoughData(
            f"no setting could be scored on {len(y)} examples ({scoring} was undefined on "
            "every fold): wait for more outcomes"
        )
    best = max(scored, key=lambda t: t.cv_score)  # ties: the earlier trial
    return SearchResult(
        best=best,
        trials=tuple(trials),
        budget_s=budget_s,
        spent_s=clock() - started,
        stopped_by_budget=stopped,
    )
