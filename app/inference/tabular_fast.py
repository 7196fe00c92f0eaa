"""The compiled fast path of the tabular models: a fitted Pipeline as plain numpy.

A ColumnTransformer costs milliseconds per call whatever the batch size, so at load
``tabular.ServedTabular`` compiles the fitted preprocessing (``Prepare``: impute values,
clip bounds, one-hot vocabularies, scaler mean/scale) and the estimator (``Linear``: a
matrix product; ``Trees``: flat node arrays walked for all trees at once) into arrays.
``tabular`` checks the result against the Pipeline itself at load.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import ThreadpoolController

from app.inference.features import FeatureValue, Row

Array = npt.NDArray[Any]

MISSING = "(missing)"  # the category a missing categorical value is encoded as
UNSEEN = "\x00unseen"  # a category no training row can hold (probes the "other" column)
LOGIT_EPS = 1e-6  # a forest can say exactly 0 or 1; its log-odds are taken within this


def number_cell(value: FeatureValue) -> float:
    """A numeric column's cell: anything but a finite number is missing."""
    if isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return math.nan


def category_cell(value: FeatureValue) -> str:
    """A categorical column's cell: always a string (a number seen as a category too)."""
    if value is None:
        return MISSING
    return value if isinstance(value, str) else str(value)


class Prepare:
    """The Pipeline's preprocessing as numpy arrays: dict rows in, estimator input out."""

    def __init__(self, pipeline: Pipeline, numeric: Sequence[str], categorical: Sequence[str]):
        self.numeric = tuple(numeric)
        self.categorical = tuple(categorical)
        prepare: ColumnTransformer = pipeline.named_steps["prepare"]
        n_num = len(self.numeric)
        if n_num:
            numbers = prepare.named_transformers_["numeric"]
            scaler = numbers.named_steps["scale"]
            self.impute: Array = numbers.named_steps["impute"].statistics_.astype(np.float64)
            self.lower: Array = numbers.named_steps["clip"].lower_
            self.upper: Array = numbers.named_steps["clip"].upper_
            self.mean: Array = scaler.mean_
            self.scale: Array = scaler.scale_
        # Per categorical column: value -> output column, and the column of anything else
        # (the infrequent "other" column, or -1 where there is none: all zeros).
        self.vocab: list[dict[object, int]] = []
        self.other: list[int] = []
        # Per input column (numbers, then categories): its output columns.
        self.groups: list[slice] = [slice(j, j + 1) for j in range(n_num)]
        self.width = n_num
        if self.categorical:
            self._compile_onehot(prepare.named_transformers_["categorical"])

    def _compile_onehot(self, encoder: OneHotEncoder) -> None:
        # Ask the fitted encoder where each known value (and an unseen one) lands, rather
        # than re-deriving its infrequent-category rules: one probe row per value, the
        # other columns at their first category.
        categories = [list(c) for c in encoder.categories_]
        first = [c[0] for c in categories]
        start = 0  # of column j's block in the encoder's output
        for j, known in enumerate(categories):
            infrequent = encoder.infrequent_categories_[j]
            n_rare = 0 if infrequent is None else len(infrequent)
            width = len(known) - n_rare + (1 if n_rare else 0)
            probe = np.array([first] * (len(known) + 1), dtype=object)
            probe[:, j] = [*known, UNSEEN]
            block = np.asarray(encoder.transform(probe))[:, start : start + width]
            offset = self.width + start
            codes = [offset + int(np.argmax(r)) if r.sum() == 1 else -1 for r in block]
            vocab: dict[object, int] = dict(zip(known, codes[:-1], strict=True))
            if MISSING in vocab:
                vocab[None] = vocab[MISSING]
            self.vocab.append(vocab)
            self.other.append(codes[-1])
            self.groups.append(slice(offset, offset + width))
            start += width
        self.width += start

    def numbers(self, rows: Sequence[Row]) -> Array:
        flat = [row.get(c) for row in rows for c in self.numeric]
        if set(map(type, flat)) <= {float, type(None)}:
            data = np.array(flat, dtype=np.float64)  # None -> NaN
            data[~np.isfinite(data)] = np.nan
        else:  # odd values (a string in a numeric column): the Pipeline's own rule
            data = np.array([number_cell(v) for v in flat], dtype=np.float64)
        return data.reshape(len(rows), len(self.numeric))

    def codes(self, rows: Sequence[Row]) -> Array:
        codes = np.empty((len(rows), len(self.categorical)), dtype=np.intp)
        for j, name in enumerate(self.categorical):
            vocab, other = self.vocab[j], self.other[j]
            column = [row.get(name) for row in rows]
            codes[:, j] = [
                vocab[v] if v in vocab else vocab.get(category_cell(v), other) for v in column
            ]
        return codes

    def matrix(self, rows: Sequence[Row]) -> Array:
        """The estimator's input for ``rows``, equal to the Pipeline's preprocessing."""
        n, n_num = len(rows), len(self.numeric)
        out = np.zeros((n, self.width), dtype=np.float64)
        if n_num:
            data = self.numbers(rows)
            data = np.where(np.isnan(data), self.impute, data)
            np.clip(data, self.lower, self.upper, out=data)
            data -= self.mean
            data /= self.scale
            out[:, :n_num] = data
        if self.categorical:
            codes = self.codes(rows)
            hit = codes >= 0
            out[np.nonzero(hit)[0], codes[hit]] = 1.0
        return out


class Linear:
    """Logistic regression as ``expit(X @ w + b)``."""

    def __init__(self, model: LogisticRegression) -> None:
        self.w: Array = model.coef_[0].astype(np.float64)
        self.b = float(model.intercept_[0])

    def scores(self, x: Array) -> tuple[Array, Array]:
        """Log-odds and probability per row."""
        z: Array = x @ self.w + self.b
        return z, np.asarray(expit(z))

    def proba(self, x: Array) -> Array:
        return self.scores(x)[1]


class Trees:
    """A tree ensemble as flat node arrays, walked one level at a time for all rows and
    trees together: no per-call overhead, so small batches are fast. Large batches go to
    scikit-learn's compiled predictor, which wins there (``walk_max_cells``)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.boosted = isinstance(model, HistGradientBoostingClassifier)
        # Measured crossovers (rows x trees) on 2 cores: ~250 rows of a 120-tree HGB,
        # ~5,000 rows of an 80-tree forest (scikit-learn's forest has more overhead).
        self.walk_max_cells = 30_000 if self.boosted else 400_000
        self.baseline = 0.0
        self.walk = True
        try:
            if self.boosted:
                self._from_boosted(model)
            else:
                self._from_forest(model)
        except (AttributeError, IndexError, KeyError, ValueError):
            self.walk = False  # an estimator layout we do not know: scikit-learn predicts

    def _from_boosted(self, model: HistGradientBoostingClassifier) -> None:
        # Private attributes: checked against the estimator at load (``verify``).
        trees = [predictors[0].nodes for predictors in model._predictors]
        if any(t["is_categorical"].any() for t in trees):
            raise ValueError("native categorical splits are not compiled")
        self.baseline = float(np.ravel(model._baseline_prediction)[0])
        parts = [
            (t["feature_idx"], t["num_threshold"], t["left"], t["right"], t["is_leaf"] == 1,
             t["value"])
            for t in trees
        ]  # fmt: skip
        self._flatten(parts, depth=max(int(t["depth"].max()) for t in trees))

    def _from_forest(self, model: RandomForestClassifier | ExtraTreesClassifier) -> None:
        parts = []
        for tree in (est.tree_ for est in model.estimators_):
            counts = tree.value[:, 0, :]
            total = counts.sum(axis=1)
            positive = counts[:, 1] / np.where(total > 0, total, 1.0)
            leaf = tree.children_left == -1
            parts.append(
                (tree.feature, tree.threshold, tree.children_left, tree.children_right, leaf,
                 positive)
            )  # fmt: skip
        self._flatten(parts, depth=max(est.tree_.max_depth for est in model.estimators_))

    def _flatten(self, trees: Sequence[tuple[Array, ...]], depth: int) -> None:
        feature, threshold, children, value, roots = [], [], [], [], []
        offset = 0
        for feat, thr, left, right, leaf, val in trees:
            index = np.arange(offset, offset + len(feat))
            # A leaf points at itself, so walking on past it changes nothing.
            feature.append(np.where(leaf, 0, feat))
            threshold.append(np.where(leaf, 0.0, thr))
            pair = [np.where(leaf, index, offset + left), np.where(leaf, index, offset + right)]
            children.append(np.stack(pair, axis=1).ravel())
            value.append(np.where(leaf, val, 0.0))
            roots.append(offset)
            offset += len(feat)
        self.feature = np.concatenate(feature).astype(np.intp)
        self.threshold = np.concatenate(threshold).astype(np.float64)
        self.children = np.concatenate(children).astype(np.intp)
        self.value = np.concatenate(value).astype(np.float64)
        self.roots = np.asarray(roots, dtype=np.intp)
        self.depth = depth

    def leaf_values(self, x: Array) -> Array:
        """Each row's leaf value in each tree (n_rows x n_trees)."""
        n, width = x.shape
        if not self.boosted:
            # scikit-learn's trees compare float32 inputs with float64 thresholds.
            x = x.astype(np.float32)
        flat = x.ravel()
        row_start = (np.arange(n, dtype=np.intp) * width)[:, None]
        node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        for _ in range(self.depth):
            right = flat[row_start + self.feature[node]] > self.threshold[node]
            node = self.children[2 * node + right]
        leaves: Array = self.value[node]
        return leaves

    def _walks(self, x: Array) -> bool:
        return self.walk and x.shape[0] * len(self.roots) <= self.walk_max_cells

    def _sklearn(self, x: Array) -> Array:
        # One OpenMP thread: with the service's other threads on 2 cores, scikit-learn's
        # default two spun for ~0.7 s per call (measured); single-threaded it is ~3 ms.
        with one_openmp_thread():
            if self.boosted:
                return np.asarray(self.model.decision_function(x), dtype=np.float64)
            return np.asarray(self.model.predict_proba(x)[:, 1])

    def verify(self, x: Array, expected: Array) -> None:
        """Stop walking (scikit-learn predicts) if the walk disagrees with it on ``x``."""
        if self.walk:
            leaves = self.leaf_values(x)
            p = expit(self.baseline + leaves.sum(axis=1)) if self.boosted else leaves.mean(1)
            self.walk = bool(np.allclose(p, expected, rtol=0, atol=1e-9))

    def scores(self, x: Array) -> tuple[Array, Array]:
        """Log-odds and probability per row (a forest's log-odds within ``LOGIT_EPS``)."""
        if self.boosted:
            if self._walks(x):
                raw = np.asarray(self.baseline + self.leaf_values(x).sum(axis=1))
            else:
                raw = self._sklearn(x)
            return raw, np.asarray(expit(raw))
        p = self.leaf_values(x).mean(axis=1) if self._walks(x) else self._sklearn(x)
        clipped = np.clip(p, LOGIT_EPS, 1 - LOGIT_EPS)
        return np.log(clipped) - np.log1p(-clipped), p

    def proba(self, x: Array) -> Array:
        return self.scores(x)[1]


_OPENMP: list[Any] = []


@contextlib.contextmanager
def one_openmp_thread() -> Iterator[None]:
    """Limit scikit-learn's OpenMP to the calling thread for the duration."""
    if not _OPENMP:  # finding the loaded libraries takes milliseconds: once
        _OPENMP.append(ThreadpoolController().select(user_api="openmp"))
    with _OPENMP[0].limit(limits=1):
        yield
