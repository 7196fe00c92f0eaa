"""Judging models on the holdout: metrics for yes/no and multi-class scores, and the
verdict that promotes a challenger only when it beats the champion by a margin.

Where it sits: the trainer scores the newest examples (the holdout of
``dataset.time_split``) with the challenger and the champion; here those scores become
numbers and a ``Verdict``. Pure numpy and scikit-learn metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    roc_auc_score,
)

Array = npt.NDArray[Any]

# The metric the verdict compares, per kind of model.
PRIMARY = {"binary": "roc_auc", "multiclass": "macro_f1"}
# Metrics where smaller is better; every other metric is larger-is-better.
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


def binary_metrics(
    y_true: Sequence[int] | Array, proba: Array, *, review_rate: float = 0.05
) -> dict[str, float]:
    """How good ``proba`` (P(positive) per row) is for outcomes ``y_true`` (1 = positive).

    ``caught_at_review``: the share of all positives found in the ``review_rate`` share
    of rows with the highest scores (rounded up, at least one row; ties in score taken
    in row order), what analysts catch when they review that many. It and the ranking
    metrics (``roc_auc``, ``pr_auc``) are left out when only one outcome is present.
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=np.float64)
    if y.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"{y.shape} outcomes but probabilities of shape {p.shape}")
    if len(y) == 0:
        raise ValueError("no rows to measure")
    if not 0 < review_rate <= 1:
        raise ValueError(f"review_rate must be in (0, 1], got {review_rate}")
    n, positives = len(y), int(y.sum())
    metrics = {
        "n": float(n),
        "positive_rate": positives / n,
        "review_rate": float(review_rate),
        "brier": float(brier_score_loss(y, p, pos_label=1)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
    }
    if 0 < positives < n:
        metrics["roc_auc"] = float(roc_auc_score(y, p))
        metrics["pr_auc"] = float(average_precision_score(y, p))
        reviewed = max(1, math.ceil(review_rate * n - 1e-9))
        top = np.argsort(-p, kind="stable")[:reviewed]
        metrics["caught_at_review"] = float(y[top].sum()) / positives
    return metrics


def multiclass_metrics(
    y_true: Sequence[str], proba: Array, classes: Sequence[str]
) -> dict[str, float]:
    """Accuracy, macro F1 and log loss of ``proba`` (one column per class, in ``classes``
    order). Macro F1 averages over the model's classes that occur in the truth or the
    predictions. A true label outside ``classes`` is always wrong (a false positive for
    the class predicted) and costs the log loss of probability zero (clipped), without
    raising."""
    p = np.asarray(proba, dtype=np.float64)
    names = list(classes)
    if p.ndim != 2 or p.shape != (len(y_true), len(names)):
        raise ValueError(
            f"{len(y_true)} labels and {len(names)} classes but probabilities of shape {p.shape}"
        )
    if len(y_true) == 0:
        raise ValueError("no rows to measure")
    truth = np.asarray(list(y_true), dtype=object)
    predicted = np.asarray(names, dtype=object)[p.argmax(axis=1)]
    index = {name: i for i, name in enumerate(names)}
    column = np.asarray([index.get(str(label), -1) for label in truth])
    # As sklearn's log_loss: rows renormalised, probabilities clipped to the float eps.
    eps = np.finfo(np.float64).eps
    p = p / p.sum(axis=1, keepdims=True)
    rows = np.arange(len(truth))
    present = set(truth.tolist()) | set(predicted.tolist())
    given = np.where(column >= 0, p[rows, np.maximum(column, 0)], 0.0)
    return {
        "n": float(len(truth)),
        "accuracy": float(np.mean(predicted == truth)),
        "macro_f1": float(
            f1_score(
                truth.astype(str),
                predicted.astype(str),
                labels=[c for c in names if c in present],
                average="macro",
                zero_division=0,
            )
        ),
        "log_loss": float(np.mean(-np.log(np.clip(given, eps, 1.0)))),
    }


@dataclass(frozen=True)
class Verdict:
    """Whether the challenger replaces the champion, on which metric, and why."""

    promote: bool
    metric: str
    champion: float | None
    challenger: float | None
    margin: float
    reason: str


def _value(metrics: Mapping[str, float] | None, metric: str) -> float | None:
    """``metrics[metric]`` as a float; missing or nan is None."""
    if metrics is None:
        return None
    value = metrics.get(metric)
    if value is None or math.isnan(float(value)):
        return None
    return float(value)


def verdict(
    champion: Mapping[str, float] | None,
    challenger: Mapping[str, float],
    *,
    metric: str,
    margin: float,
) -> Verdict:
    """Promote the challenger when it beats the champion on ``metric`` by ``margin`` or
    more (for ``log_loss``/``brier``: is lower by that much), or when there is no
    champion to compare with; keep the champion otherwise, or when the challenger's
    ``metric`` is missing (e.g. a holdout with one outcome has no roc_auc)."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    old, new = _value(champion, metric), _value(challenger, metric)

    def decide(promote: bool, reason: str) -> Verdict:
        return Verdict(promote, metric, old, new, margin, reason)

    if new is None:
        shown = "none" if old is None else f"{old:.3f}"
        return decide(
            False,
            f"the challenger has no {metric} on the holdout (champion {shown}): keep the champion",
        )
    if old is None:
        why = "there is no champion" if champion is None else f"the champion has no {metric}"
        return decide(True, f"{metric} {new:.3f} and {why} to compare with: promote")
    gain = old - new if metric in LOWER_IS_BETTER else new - old
    compared = f"{metric} {new:.3f} vs champion {old:.3f}"
    if gain >= margin - 1e-12:  # a float sum must not turn "exactly the margin" into less
        return decide(True, f"{compared}: better by {gain:.3f} (margin {margin:g}): promote")
    if gain > 0:
        return decide(
            False,
            f"{compared}: better by only {gain:.3f}, under the margin {margin:g}: "
            "keep the champion",
        )
    if gain == 0:
        return decide(False, f"{compared}: no better (margin {margin:g}): keep the champion")
    return decide(False, f"{compared}: worse by {-gain:.3f} (margin {margin:g}): keep the champion")
