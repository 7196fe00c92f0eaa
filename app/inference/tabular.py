"""Tabular models (a declared model of ``kind: tabular``) in service: one scikit-learn
Pipeline each, served through a numpy fast path, every score with an explanation.

Where it sits: ``features.Rows`` turns a batch of events into the named columns a model
version reads (the names are the recipe: ``log(amount)``, ``device.kind``); here those
rows become the model's input and a ``Prediction`` per event. The trainer fits the
Pipeline (``app.trainer.jobs.fit_tabular``) and writes it as ``model.skops``; what
fitting and serving must agree on stays here: the Pipeline's input
(``pipeline_input``), feature rows in time order (``rows_in_order``) and
``QuantileClipper``, which every ``model.skops`` stores by this module's path.

- **Serving** (``ServedTabular``): a ColumnTransformer costs milliseconds per call
  whatever the batch size (docs/dependencies.md, scikit-learn), so at load the fitted
  preprocessing is "compiled" into numpy arrays (impute values, clip bounds, one-hot
  vocabularies, scaler mean/scale) and the estimator into a matrix product (logistic
  regression) or flat node arrays walked for all trees at once (tree ensembles). The
  compiled model is checked against the Pipeline on probe rows at load;
  ``reference_proba`` is the Pipeline itself, kept for tests and benchmarks.
- **Explanations**: logistic regression gets exact log-odds terms
  ``w_i * (x_i - mean_i)`` that sum with ``base`` to the logit ("linear-exact"); tree
  ensembles get occlusion: each input feature (a one-hot group counts as one) is set to
  its training reference value (median / most frequent) and the change in log-odds is
  its contribution ("occlusion"), for the whole batch in one extra prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import skops.io as sio
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted, validate_data

from app.declarations.spec import DeclaredModel
from app.errors import ConfigError
from app.inference import features
from app.inference.base import TOP_CONTRIBUTIONS, BatchContext, Prediction
from app.inference.calibration import Calibration
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
from schemas import EventCore

Array = npt.NDArray[Any]

MODEL_FILE = "model.skops"
CLIP_QUANTILES = (0.005, 0.995)

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


# What ``params["columns"]`` says in every version whose column names are their own
# recipe (``features.Rows``); a version without it was trained before and is refused.
COLUMNS = "recipe-v1"


# --- what fitting and serving share -----------------------------------------------------


class QuantileClipper(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Clip each column to the ``[lower, upper]`` quantiles seen in training.

    No built-in scikit-learn transformer clips to training quantiles while keeping the
    scale (``MinMaxScaler(clip=True)`` clips to the extremes, ``QuantileTransformer``
    changes the scale), so this one is ours; it is on ``TABULAR_TRUSTED_TYPES``. Every
    Pipeline holds one (``app.trainer.jobs.fit_tabular.build_pipeline``) and model.skops
    records it by this module's path: moving it would stop saved models from loading.
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


def pipeline_input(
    rows: Sequence[Row], numeric: Sequence[str], categorical: Sequence[str]
) -> Array:
    """Feature rows as the Pipeline's input: numbers (NaN = missing), then categories."""
    matrix = np.empty((len(rows), len(numeric) + len(categorical)), dtype=object)
    for i, row in enumerate(rows):
        matrix[i, : len(numeric)] = [number_cell(row.get(c)) for c in numeric]
        matrix[i, len(numeric) :] = [category_cell(row.get(c)) for c in categorical]
    return matrix


def rows_in_order(model: DeclaredModel, events: Sequence[EventCore]) -> list[Row]:
    """Every candidate feature of ``model`` for ``events``, computed in time order with a
    fresh ``History`` (as serving computes them, so "vs recent mean" sees only earlier
    events). ``rows[i]`` belongs to ``events[i]``: the order of the input is kept; ties in
    ``occurred_at`` are taken in input order.
    """
    order = sorted(range(len(events)), key=lambda i: events[i].occurred_at)
    computed = features.model_rows(model, [events[i] for i in order], History())
    rows: list[Row] = [{} for _ in events]
    for i, row in zip(order, computed, strict=True):
        rows[i] = row
    return rows


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
            "by app.trainer.jobs.fit_tabular; retrain it"
        ) from None


class ServedTabular:
    """A tabular model version loaded for scoring (``base.Served``)."""

    def __init__(self, meta: ModelMeta, pipeline: Pipeline) -> None:
        self.meta = meta
        self.pipeline = pipeline
        self.score_key = str(_param(meta, "score"))
        self.method = "linear-exact" if _param(meta, "estimator") == "logreg" else "occlusion"
        if meta.params.get("columns") != COLUMNS:
            raise ConfigError(
                f"model {meta.name} {meta.tag} was trained before its columns named their "
                "own features (an older Arbiter): retrain it (`arbiter train "
                f"{meta.name}`) or roll back to a newer version"
            )
        self.numeric = tuple(_param(meta, "numeric"))
        self.categorical = tuple(_param(meta, "categorical"))
        self.rows = features.Rows(self.numeric, self.categorical)
        try:
            self.calibration = Calibration.from_json(meta.params.get("calibration"))
        except ValueError as exc:
            raise ConfigError(f"model {meta.name} {meta.tag}: {exc}; retrain it") from None
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
    def recent_fields(self) -> tuple[str, ...]:
        return self.rows.recent_fields

    def warm_up(self) -> None:
        """Score the reference row once, explanation included (``scoring.warm_up``)."""
        self.predict_rows([self.reference])

    @property
    def compiled_trees(self) -> bool:
        """Whether small batches walk our compiled trees (False: scikit-learn's)."""
        return isinstance(self.model, Trees) and self.model.walk

    def predict(self, ctx: BatchContext) -> list[Prediction]:
        return self.predict_rows(self.rows.rows(ctx.events, recent(ctx, self.rows.recent_fields)))

    def proba(self, rows: Sequence[Row]) -> Array:
        """P(positive) per row through the fast path, calibrated."""
        if not rows:
            return np.empty(0)
        return self.calibration.apply(self.model.proba(self.prepare.matrix(rows)))

    def raw_proba(self, rows: Sequence[Row]) -> Array:
        """The fitted model's own score per row, before calibration (what the
        calibration maps; the benchmarks compare the two)."""
        if not rows:
            return np.empty(0)
        return self.model.proba(self.prepare.matrix(rows))

    def reference_proba(self, rows: Sequence[Row], *, calibrated: bool = True) -> Array:
        """P(positive) per row through the full scikit-learn Pipeline (the reference),
        calibrated unless asked for the Pipeline's own score."""
        if not rows:
            return np.empty(0)
        data = pipeline_input(rows, self.numeric, self.categorical)
        with one_openmp_thread():  # see Trees._sklearn
            raw = np.asarray(self.pipeline.predict_proba(data)[:, 1])
        return self.calibration.apply(raw) if calibrated else raw

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
            calibrated = self.calibration.apply(self.model.proba(x))
            return [Prediction({self.score_key: round(v, 6)}, {}) for v in calibrated.tolist()]
        found = self.contributions(rows, x)
        top = np.argsort(-np.abs(found.terms), axis=1, kind="stable")[:, :TOP_CONTRIBUTIONS]
        base = round(found.base, 4)
        out: list[Prediction] = []
        for i, p in enumerate(self.calibration.apply(found.proba).tolist()):
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


def recent(ctx: BatchContext, fields: Sequence[str]) -> dict[str, list[float | None]]:
    """The batch's ``vs_recent_mean`` of each field, computed once per batch whatever the
    models reading it (a champion and its shadow), from the type's history in the
    scorer's state (it outlives batches)."""
    history: History = ctx.state.setdefault("history", History())

    def ratios(path: str) -> Callable[[], list[float | None]]:
        return lambda: features.recent_ratios(ctx.events, path, history)

    return {f: ctx.memo(f"recent:{f}", ratios(f)) for f in fields}


def remember(state: dict[str, Any], events: Sequence[EventCore], fields: Sequence[str]) -> None:
    """Add ``events`` to the type's history of ``fields`` kept in ``state`` (the scorer's):
    what a restart replays from the ledger so that "vs recent mean" does not start from
    nothing."""
    history: History = state.setdefault("history", History())
    for f in fields:
        features.recent_ratios(events, f, history)


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
