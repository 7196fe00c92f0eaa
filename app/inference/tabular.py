"""Tabular models (``transaction.fraud``, ``order.risk``): trained as one scikit-learn
Pipeline each, served through a numpy fast path, every score with an explanation.

Where it sits: ``features.feature_rows`` turns a batch of events into named raw feature
rows; here those rows become the model's input and a ``Prediction`` per event.

- **Training** (``fit``): the columns are discovered from the rows (event attributes
  included), the data is split by time (oldest 75 % train, newest 25 % holdout), the
  rare class is weighted up, and one ``Pipeline`` is fitted: median imputation,
  clipping to training quantiles and scaling of numbers, one-hot encoding of categories
  with an "other" bucket for rare and unseen values, then the estimator ("hgb",
  "logreg" or "forest"). The Pipeline is the artifact (``model.skops``). ``fit_rows``
  is the fitting step alone (given rows, outcomes, columns, hyper-parameters and
  weights): the trainer (``app/trainer``) chooses those itself and calls it.
- **Serving** (``ServedTabular``): a ColumnTransformer costs milliseconds per call
  whatever the batch size (STACK-NOTES), so at load the fitted preprocessing is
  "compiled" into numpy arrays (impute values, clip bounds, one-hot vocabularies, scaler
  mean/scale) and the estimator into a matrix product (logistic regression) or flat
  node arrays walked for all trees at once (tree ensembles). The compiled model is
  checked against the Pipeline on probe rows at load; ``reference_proba`` is the
  Pipeline itself, kept for tests and benchmarks.
- **Explanations**: logistic regression gets exact log-odds terms
  ``w_i * (x_i - mean_i)`` that sum with ``base`` to the logit ("linear-exact"); tree
  ensembles get occlusion: each input feature (a one-hot group counts as one) is set to
  its training reference value (median / most frequent) and the change in log-odds is
  its contribution ("occlusion"), for the whole batch in one extra prediction.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import skops.io as sio
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from app.errors import ConfigError
from app.inference import features
from app.inference.base import TOP_CONTRIBUTIONS, BatchContext, Prediction
from app.inference.features import FeatureValue, History, Row
from app.inference.tabular_fast import (
    UNSEEN,
    Linear,
    Prepare,
    Trees,
    category_cell,
    number_cell,
    one_openmp_thread,
)
from app.values import ModelMeta
from schemas import EventBase

Array = npt.NDArray[Any]

ESTIMATORS = ("hgb", "logreg", "forest")
MODEL_FILE = "model.skops"
HOLDOUT_SHARE = 0.25
MIN_COVERAGE = 0.01  # an attribute present in fewer training rows is noise, not a column
CLIP_QUANTILES = (0.005, 0.995)
MIN_CATEGORY_SHARE = 0.005  # rarer categories share the "other" (infrequent) column
MAX_CATEGORIES = 32  # per categorical column, the "other" column included

# What a tabular model.skops may hold beyond skops' own defaults; ``load`` refuses
# anything else.
TABULAR_TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "app.inference.tabular.QuantileClipper",
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.tree._tree.Tree",
    }
)


@dataclass(frozen=True)
class TabularSpec:
    """One tabular model: the event type it scores, the score it writes, what it learns."""

    name: str
    event_type: str
    score: str  # the score key written on the event
    label: str  # the simulator/outcome label it learns (True = positive)
    train_size: int  # events drawn from the simulator for a first model


SPECS: tuple[TabularSpec, ...] = (
    TabularSpec("transaction.fraud", "transaction", "fraud", "fraud", 30_000),
    TabularSpec("order.risk", "order", "risk", "problem", 20_000),
)


# --- the Pipeline ----------------------------------------------------------------------


class QuantileClipper(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Clip each column to the ``[lower, upper]`` quantiles seen in training.

    No built-in scikit-learn transformer clips to training quantiles while keeping the
    scale (``MinMaxScaler(clip=True)`` clips to the extremes, ``QuantileTransformer``
    changes the scale), so this one is ours; it is on ``TABULAR_TRUSTED_TYPES``.
    """

    def __init__(self, lower: float = CLIP_QUANTILES[0], upper: float = CLIP_QUANTILES[1]):
        self.lower = lower
        self.upper = upper

    def fit(self, X: Any, y: Any = None) -> QuantileClipper:  # noqa: N803 (sklearn's name)
        data = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan")
        self.lower_ = np.nanquantile(data, self.lower, axis=0)
        self.upper_ = np.nanquantile(data, self.upper, axis=0)
        return self

    def transform(self, X: Any) -> Array:  # noqa: N803
        check_is_fitted(self)
        data = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=False)
        clipped: Array = np.clip(data, self.lower_, self.upper_)
        return clipped


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


def pipeline_input(
    rows: Sequence[Row], numeric: Sequence[str], categorical: Sequence[str]
) -> Array:
    """Feature rows as the Pipeline's input: numbers (NaN = missing), then categories."""
    matrix = np.empty((len(rows), len(numeric) + len(categorical)), dtype=object)
    for i, row in enumerate(rows):
        matrix[i, : len(numeric)] = [number_cell(row.get(c)) for c in numeric]
        matrix[i, len(numeric) :] = [category_cell(row.get(c)) for c in categorical]
    return matrix


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


# --- training --------------------------------------------------------------------------


@dataclass(frozen=True)
class FittedTabular:
    """A freshly trained tabular model (``base.Fitted``); ``write`` stores the Pipeline."""

    spec: TabularSpec
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
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "reference": dict(self.reference),
            "means": list(self.means),
            "estimator_params": dict(self.estimator_params),
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


def _outcome(label: Mapping[str, Any] | bool, key: str) -> bool:
    return bool(label[key]) if isinstance(label, Mapping) else bool(label)


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


def rows_in_order(spec: TabularSpec, events: Sequence[EventBase]) -> list[Row]:
    """Feature rows of ``events``, computed in time order with a fresh ``History`` (as
    serving computes them, so "amount vs recent average" sees only earlier events).

    ``rows[i]`` belongs to ``events[i]``: the order of the input is kept; ties in
    ``occurred_at`` are taken in input order.
    """
    order = sorted(range(len(events)), key=lambda i: events[i].occurred_at)
    computed = features.feature_rows(spec.event_type, [events[i] for i in order], History())
    rows: list[Row] = [{} for _ in events]
    for i, row in zip(order, computed, strict=True):
        rows[i] = row
    return rows


def fit_rows(
    spec: TabularSpec,
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


def _json_safe(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as JSON values (numpy scalars become Python numbers)."""
    return {str(k): v.item() if isinstance(v, np.generic) else v for k, v in params.items()}


def fit(
    spec: TabularSpec,
    events: Sequence[EventBase],
    labels: Sequence[Mapping[str, Any] | bool],
    *,
    estimator: str = "hgb",
    seed: int = 0,
) -> FittedTabular:
    """Train ``estimator`` on the oldest 75 % of ``events``; measure on the newest 25 %.

    ``labels``: per event, its outcome (``True`` = positive) or a label dict holding
    ``spec.label`` (what ``simulator.generate.training_set`` returns).
    """
    if len(events) != len(labels):
        raise ValueError(f"{len(events)} events but {len(labels)} labels")
    order = sorted(range(len(events)), key=lambda i: events[i].occurred_at)
    ordered = [events[i] for i in order]
    y_all = np.asarray([_outcome(labels[i], spec.label) for i in order], dtype=int)
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
    fitted = fit_rows(
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
        proba = fitted.pipeline.predict_proba(x_test)[:, 1]
    metrics = {
        "brier": float(brier_score_loss(y_test, proba)),
        "log_loss": float(log_loss(y_test, proba, labels=[0, 1])),
    }
    if 0 < y_test.sum() < len(y_test):  # ranking metrics need both outcomes
        metrics["roc_auc"] = float(roc_auc_score(y_test, proba))
        metrics["pr_auc"] = float(average_precision_score(y_test, proba))
    return replace(fitted, metrics=metrics)


# --- serving ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Contributions:
    """Per row, each term's contribution in log-odds; ``base`` is the same for every row.

    linear-exact: ``terms.sum(axis=1) + base == logit`` (names: output features);
    occlusion: ``logit - terms[:, g]`` is the logit with input ``g`` at its reference and
    ``base`` is the logit of the all-reference row (names: input columns).
    """

    method: str
    names: tuple[str, ...]
    terms: Array
    base: float
    logit: Array = field(repr=False)
    proba: Array = field(repr=False)


def _param(meta: ModelMeta, key: str) -> Any:
    try:
        return meta.params[key]
    except KeyError:
        raise ConfigError(
            f"model {meta.name} {meta.tag} has no {key!r} in its params: it was not written "
            "by app.inference.tabular.fit; retrain it"
        ) from None


class ServedTabular:
    """A tabular model version loaded for scoring (``base.Served``)."""

    def __init__(self, meta: ModelMeta, pipeline: Pipeline) -> None:
        self.meta = meta
        self.pipeline = pipeline
        self.score_key = str(_param(meta, "score"))
        self.method = "linear-exact" if _param(meta, "estimator") == "logreg" else "occlusion"
        self.numeric = tuple(_param(meta, "numeric"))
        self.categorical = tuple(_param(meta, "categorical"))
        self.reference: dict[str, FeatureValue] = dict(_param(meta, "reference"))
        self.means = np.asarray(_param(meta, "means"), dtype=np.float64)
        self.prepare = Prepare(pipeline, self.numeric, self.categorical)
        model = pipeline.named_steps["model"]
        self.model: Linear | Trees = (
            Linear(model) if isinstance(model, LogisticRegression) else Trees(model)
        )
        if len(meta.features) != self.prepare.width or len(self.means) != self.prepare.width:
            raise ConfigError(
                f"model {meta.name} {meta.tag}: its record lists {len(meta.features)} features "
                f"but the artifact produces {self.prepare.width}; the record and model.skops "
                "do not belong together: restore or retrain"
            )
        self._reference_x = self.prepare.matrix([self.reference])
        self._check()
        # The explanation's base: the logit at the training means (linear: then the terms
        # add up to the logit) or of the all-reference row (occlusion).
        if isinstance(self.model, Linear):
            self.base = self.model.b + float(self.means @ self.model.w)
        else:
            self.base = float(self.model.scores(self._reference_x)[0][0])

    def _probe_rows(self) -> list[Row]:
        """The reference row, each category in turn, clip bounds and missing values."""
        rows: list[Row] = [dict(self.reference), {}]  # reference; everything missing
        for j, name in enumerate(self.numeric):
            lo, hi = float(self.prepare.lower[j]), float(self.prepare.upper[j])
            rows += [{**self.reference, name: v} for v in (lo - 1.0, hi + 1.0, (lo + hi) / 2)]
        for name, vocab in zip(self.categorical, self.prepare.vocab, strict=True):
            rows += [{**self.reference, name: value} for value in vocab if isinstance(value, str)]
            rows.append({**self.reference, name: UNSEEN})
        return rows

    def _check(self) -> None:
        """Refuse to serve a compiled model that differs from its Pipeline."""
        rows = self._probe_rows()
        data = pipeline_input(rows, self.numeric, self.categorical)
        with one_openmp_thread():
            expected_x = np.asarray(self.pipeline[:-1].transform(data), dtype=np.float64)
            expected = self.pipeline.predict_proba(data)[:, 1]
        if not np.allclose(self.prepare.matrix(rows), expected_x, rtol=0, atol=1e-9):
            raise ConfigError(
                f"model {self.meta.name} {self.meta.tag}: the compiled preprocessing differs "
                "from the Pipeline's (an unsupported scikit-learn version?): retrain it"
            )
        if isinstance(self.model, Trees):
            self.model.verify(expected_x, expected)
        if not np.allclose(self.model.proba(expected_x), expected, rtol=0, atol=1e-9):
            raise ConfigError(
                f"model {self.meta.name} {self.meta.tag}: the compiled estimator differs "
                "from the Pipeline's: retrain it"
            )

    @property
    def compiled_trees(self) -> bool:
        """Whether small batches walk our compiled trees (False: scikit-learn's)."""
        return isinstance(self.model, Trees) and self.model.walk

    def predict(self, ctx: BatchContext) -> list[Prediction]:
        rows: list[Row] = ctx.memo(
            "tabular.rows", lambda: remember(ctx.state, ctx.event_type, ctx.events)
        )
        return self.predict_rows(rows)

    def proba(self, rows: Sequence[Row]) -> Array:
        """P(positive) per row through the fast path."""
        if not rows:
            return np.empty(0)
        return self.model.proba(self.prepare.matrix(rows))

    def reference_proba(self, rows: Sequence[Row]) -> Array:
        """P(positive) per row through the full scikit-learn Pipeline (the reference)."""
        if not rows:
            return np.empty(0)
        data = pipeline_input(rows, self.numeric, self.categorical)
        with one_openmp_thread():  # see Trees._sklearn
            return np.asarray(self.pipeline.predict_proba(data)[:, 1])

    def contributions(self, rows: Sequence[Row], x: Array | None = None) -> Contributions:
        """Every term of every row's explanation (``predict`` keeps the top ones)."""
        x = self.prepare.matrix(rows) if x is None else x
        if isinstance(self.model, Linear):
            w = self.model.w
            logit, proba = self.model.scores(x)
            terms = x * w - self.means * w
            return Contributions(self.method, self.meta.features, terms, self.base, logit, proba)
        # Occlusion: the batch and, per input column, the batch with that column at its
        # reference value, scored in one call.
        n, groups = x.shape[0], self.prepare.groups
        occluded = np.repeat(x[:, None, :], len(groups), axis=1)
        for g, columns in enumerate(groups):
            occluded[:, g, columns] = self._reference_x[0, columns]
        logits, probas = self.model.scores(np.concatenate([x, occluded.reshape(-1, x.shape[1])]))
        logit, without = logits[:n], logits[n:].reshape(n, len(groups))
        names = (*self.numeric, *self.categorical)
        return Contributions(
            self.method, names, logit[:, None] - without, self.base, logit, probas[:n]
        )

    def predict_rows(self, rows: Sequence[Row], *, explain: bool = True) -> list[Prediction]:
        """One Prediction per row; ``explain=False`` leaves explanations empty (benchmarks)."""
        if not rows:
            return []
        x = self.prepare.matrix(rows)
        if not explain:
            return [
                Prediction({self.score_key: round(v, 6)}, {}) for v in self.model.proba(x).tolist()
            ]
        found = self.contributions(rows, x)
        top = np.argsort(-np.abs(found.terms), axis=1, kind="stable")[:, :TOP_CONTRIBUTIONS]
        base = round(found.base, 4)
        out: list[Prediction] = []
        for i, p in enumerate(found.proba.tolist()):
            terms = found.terms[i]
            listed = [[found.names[k], round(float(terms[k]), 4)] for k in top[i].tolist()]
            explanation = {
                "method": self.method,
                "base": base,
                # A zero term explains nothing (the row is at the reference there).
                "top": [item for item in listed if item[1] != 0.0],
            }
            out.append(Prediction({self.score_key: round(p, 6)}, explanation))
        return out


def remember(state: dict[str, Any], event_type: str, events: Sequence[EventBase]) -> list[Row]:
    """Feature rows of ``events``, adding them to the per-type history kept in ``state``
    (the scorer's, outliving batches): what scoring does, and what a restart replays from
    the ledger so that "amount vs recent average" does not start from nothing."""
    return features.feature_rows(event_type, events, state.setdefault("history", History()))


def load(folder: Path, meta: ModelMeta) -> ServedTabular:
    """Load ``folder/model.skops`` (checksum already verified by the caller)."""
    path = folder / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing: restore the model version or retrain it")
    untrusted = set(sio.get_untrusted_types(file=path)) - TABULAR_TRUSTED_TYPES
    if untrusted:
        raise ConfigError(
            f"{path} contains object types Arbiter does not load: {sorted(untrusted)}"
        )
    pipeline = sio.load(path, trusted=sorted(TABULAR_TRUSTED_TYPES))
    if not isinstance(pipeline, Pipeline):
        raise ConfigError(f"{path} holds a {type(pipeline).__name__}, not a Pipeline: retrain")
    return ServedTabular(meta, pipeline)


def spec_for(name: str) -> TabularSpec:
    """The spec of a tabular model by name."""
    for spec in SPECS:
        if spec.name == name:
            return spec
    raise ValueError(f"no tabular model {name!r}: use one of {[s.name for s in SPECS]}")
