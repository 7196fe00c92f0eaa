"""Drift: how far recent traffic has moved from the data a model was trained on.

When the trainer fits a model it also records a ``DriftReference``: for every feature
(and for the model's score) the share of training rows in each bin, and the training
label rate. Later, ``compare`` bins a recent window the same way and reports the
population stability index (PSI) per feature: ``sum((a - e) * ln(a / e))`` over the
bins, with ``e`` the training share and ``a`` the recent share. It is zero when the two
distributions match and grows as mass moves between bins; both shares are floored
(``psi(floor=...)``) so a bin empty on one side gives a large but finite term.

Conventional reading: below ``PSI_NOTICE`` (0.1) the feature is stable; from 0.1 to
``PSI_ALERT`` (0.25) it has shifted moderately and is worth a look; above 0.25 it has
shifted significantly, and the model is scoring data unlike its training data.

Binning: a numeric feature uses its training quantiles as edges (deduplicated, so a 0/1
flag gets two bins, not ten); a categorical one keeps its most common training
categories and counts the rest as "other". Each feature also has a "missing" bin: a
``None``, a non-finite number, a text value in a numeric column, or a column absent
from the recent rows all land there. Pure: numpy only, no I/O.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np

from app.inference.features import FeatureValue, Row

PSI_NOTICE = 0.1
PSI_ALERT = 0.25
MAX_CATEGORIES = 20
NUMBER, CATEGORY = "number", "category"
SCORE = "score"
FORMAT_VERSION = 1
T = TypeVar("T")


def _number(value: FeatureValue) -> float:
    """A value of a numeric column as a float; NaN stands for missing."""
    if value is None or isinstance(value, str):
        return math.nan
    number = float(value)
    return number if math.isfinite(number) else math.nan


def _category(value: FeatureValue) -> str | None:
    """A value of a categorical column as a string; None stands for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Reference:
    """One feature's (or the score's) training distribution over fixed bins.

    ``shares`` follow the bins in order: for a number, ``len(edges) + 1`` intervals
    ``(-inf, e0], (e0, e1], ..., (e_last, inf)`` then "missing"; for a category, each of
    ``categories``, then "other", then "missing".
    """

    name: str
    kind: str
    edges: tuple[float, ...]
    categories: tuple[str, ...]
    shares: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.kind == NUMBER:
            bins, stray = len(self.edges) + 2, "categories" if self.categories else ""
            if not all(math.isfinite(e) for e in self.edges) or any(
                a >= b for a, b in zip(self.edges, self.edges[1:], strict=False)
            ):
                raise ValueError(f"{self.name}: edges must be finite and strictly increasing")
        elif self.kind == CATEGORY:
            bins, stray = len(self.categories) + 2, "edges" if self.edges else ""
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"{self.name}: categories must be distinct")
        else:
            raise ValueError(f"{self.name}: kind must be {NUMBER!r} or {CATEGORY!r}")
        if stray:
            raise ValueError(f"{self.name}: a {self.kind} reference has no {stray}")
        if len(self.shares) != bins:
            raise ValueError(f"{self.name}: {len(self.shares)} shares for {bins} bins")
        if not all(math.isfinite(s) and s >= 0 for s in self.shares):
            raise ValueError(f"{self.name}: shares must be finite and >= 0")
        if abs(sum(self.shares) - 1.0) > 1e-6:
            raise ValueError(f"{self.name}: shares sum to {sum(self.shares):.6g}, not 1")

    def shares_of(self, values: Sequence[FeatureValue]) -> tuple[float, ...]:
        """The share of ``values`` in each of this reference's bins (all 0 when empty)."""
        return _shares(self.kind, self.edges, self.categories, values)


def _shares(
    kind: str, edges: tuple[float, ...], categories: tuple[str, ...], values: Sequence[FeatureValue]
) -> tuple[float, ...]:
    """The share of ``values`` per bin, bins as ``Reference`` describes them."""
    if kind == NUMBER:
        numbers = np.array([_number(v) for v in values], dtype=np.float64)
        present = numbers[~np.isnan(numbers)]
        # side="left": a value equal to an edge (a training quantile) falls below it.
        where = np.searchsorted(np.array(edges, dtype=np.float64), present, "left")
        counts: list[int] = np.bincount(where, minlength=len(edges) + 1).tolist()
        counts.append(numbers.size - present.size)
    else:
        seen = Counter(_category(v) for v in values)
        counts = [seen.pop(c, 0) for c in categories]
        missing = seen.pop(None, 0)
        counts += [sum(seen.values()), missing]
    total = max(len(values), 1)
    return tuple(c / total for c in counts)


def _reference(name: str, values: Sequence[FeatureValue], bins: int) -> Reference:
    """The reference of one column: categorical when any value is text, else numeric."""
    if any(isinstance(v, str) for v in values):
        counts = Counter(c for c in map(_category, values) if c is not None)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept = tuple(c for c, _ in ranked[:MAX_CATEGORIES])
        return Reference(name, CATEGORY, (), kept, _shares(CATEGORY, (), kept, values))
    numbers = np.array([_number(v) for v in values], dtype=np.float64)
    present = numbers[~np.isnan(numbers)]
    edges: tuple[float, ...] = ()
    if present.size and bins > 1:
        quantiles = np.quantile(present, np.arange(1, bins) / bins)
        edges = tuple(float(e) for e in np.unique(quantiles))
    return Reference(name, NUMBER, edges, (), _shares(NUMBER, edges, (), values))


@dataclass(frozen=True)
class DriftReference:
    """What a model's training data looked like, stored with the model version."""

    features: tuple[Reference, ...]
    score: Reference | None
    label_rate: float | None  # share of positives in training (binary); None for text
    n: int  # training rows (scores, for a model referenced by its scores alone)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be distinct")
        if self.label_rate is not None and not 0.0 <= self.label_rate <= 1.0:
            raise ValueError(f"label_rate must be within [0, 1], got {self.label_rate}")
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict that ``from_json`` turns back into an equal reference."""
        return {
            "version": FORMAT_VERSION,
            "n": self.n,
            "label_rate": self.label_rate,
            "features": [_reference_json(f) for f in self.features],
            "score": None if self.score is None else _reference_json(self.score),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DriftReference:
        """The reference ``to_json`` wrote; ``ValueError`` naming the bad field otherwise."""
        try:
            if not isinstance(raw, Mapping):
                raise ValueError(f"expected an object, got {type(raw).__name__}")
            if raw.get("version") != FORMAT_VERSION:
                raise ValueError(f"version is {raw.get('version')!r}, this code reads 1")
            listed = _field(raw, "features", list, "")
            rate = raw.get("label_rate")
            return cls(
                tuple(_parse(f, f"features[{i}].") for i, f in enumerate(listed)),
                None if raw.get("score") is None else _parse(raw["score"], "score."),
                None if rate is None else _numbers([rate], "label_rate")[0],
                _field(raw, "n", int, ""),
            )
        except ValueError as exc:
            raise ValueError(
                f"drift reference is malformed: {exc}; retrain the model to record a new one"
            ) from None


def _reference_json(ref: Reference) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(ref).items()}


def _field(raw: Mapping[str, Any], key: str, kind: type[T], where: str) -> T:
    value = raw.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise ValueError(f"{where}{key}: expected {kind.__name__}, got {value!r:.60}")
    return value


def _numbers(values: list[Any], where: str) -> tuple[float, ...]:
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{where}: expected numbers, got {values!r:.60}")
    return tuple(float(v) for v in values)


def _parse(raw: Any, where: str) -> Reference:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where.rstrip('.')}: expected an object, got {type(raw).__name__}")
    categories = _field(raw, "categories", list, where)
    if not all(isinstance(c, str) for c in categories):
        raise ValueError(f"{where}categories: expected strings, got {categories!r:.60}")
    return Reference(
        _field(raw, "name", str, where),
        _field(raw, "kind", str, where),
        _numbers(_field(raw, "edges", list, where), f"{where}edges"),
        tuple(categories),
        _numbers(_field(raw, "shares", list, where), f"{where}shares"),
    )


def build_reference(
    rows: Sequence[Row],
    columns: Sequence[str],
    *,
    scores: Sequence[float | str] | None = None,
    labels: Sequence[bool] | None = None,
    bins: int = 10,
) -> DriftReference:
    """The training distribution of ``columns`` (and of ``scores``, the label rate).

    Scores that are numbers (P(positive)) are binned like a numeric feature; scores that
    are text (a text head's class) like a categorical one. A text model may pass no rows
    and only scores; ``n`` is then the number of scores.
    """
    if not rows and (columns or not scores):
        raise ValueError("a drift reference needs training rows (or, with no columns, scores)")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    features = tuple(_reference(c, [row.get(c) for row in rows], bins) for c in columns)
    score = _reference(SCORE, list(scores), bins) if scores else None
    rate = sum(map(bool, labels)) / len(labels) if labels else None
    return DriftReference(features, score, rate, len(rows) or len(scores or ()))


def psi(expected: Sequence[float], actual: Sequence[float], *, floor: float = 1e-4) -> float:
    """Population stability index of two share vectors over the same bins.

    Both shares are raised to at least ``floor`` first, so an empty bin adds a finite
    term instead of infinity.
    """
    if len(expected) != len(actual):
        raise ValueError(f"psi needs shares over the same bins: {len(expected)} vs {len(actual)}")
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    a = np.maximum(np.asarray(actual, dtype=np.float64), floor)
    if not (np.isfinite(e).all() and np.isfinite(a).all()) or floor <= 0:
        raise ValueError("psi needs finite shares and a positive floor")
    return float(np.sum((a - e) * np.log(a / e)))


def level(value: float) -> str:
    """``stable``, ``notice`` or ``alert`` for a PSI value, by the conventional thresholds."""
    return "alert" if value > PSI_ALERT else "notice" if value >= PSI_NOTICE else "stable"


@dataclass(frozen=True)
class DriftReport:
    """PSI of each feature (and ``score``) between training and a recent window."""

    psi: dict[str, float]
    label_rate: float | None  # in the recent window; None when no labels were given
    reference_label_rate: float | None
    n: int  # rows in the recent window

    @property
    def worst(self) -> tuple[str, float] | None:
        """The feature (or ``score``) with the largest PSI; None when nothing was compared."""
        return max(self.psi.items(), key=lambda item: item[1]) if self.psi else None


def compare(
    reference: DriftReference,
    rows: Sequence[Row],
    *,
    scores: Sequence[float | str] | None = None,
    labels: Sequence[bool] | None = None,
) -> DriftReport:
    """How far ``rows`` (a recent window) have drifted from ``reference``.

    A column the recent rows lack counts as missing. With no rows there is nothing to
    compare and ``psi`` is empty; ``score`` is compared only when both the reference
    and the call have scores.
    """
    found: dict[str, float] = {}
    if rows:
        for ref in reference.features:
            found[ref.name] = psi(ref.shares, ref.shares_of([row.get(ref.name) for row in rows]))
    if reference.score is not None and scores:
        found[SCORE] = psi(reference.score.shares, reference.score.shares_of(list(scores)))
    rate = sum(map(bool, labels)) / len(labels) if labels else None
    return DriftReport(found, rate, reference.label_rate, len(rows))
