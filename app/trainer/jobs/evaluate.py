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
        "mean_score": float(p.mean()),
        "ece": expected_calibration_error(y, p),
    }
    if 0 < positives < n:
        metrics["roc_auc"] = float(roc_auc_score(y, p))
        metrics["pr_auc"] = float(average_precision_score(y, p))
        reviewed = max(1, math.ceil(review_rate * n - 1e-9))
        top = np.argsort(-p, kind="stable")[:reviewed]
        metrics["caught_at_review"] = float(y[top].sum()) / positives
    return metrics


CALIBRATION_BINS = 10


def expected_calibration_error(y: Array, p: Array, bins: int = CALIBRATION_BINS) -> float:
    """How far scores are from the rates they claim: over ``bins`` equal-width score bins,
    the gap between the mean score and the observed rate, weighted by the bin's rows."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(float(p[mask].mean()) - float(y[mask].mean()))
    return total / len(y)


def reliability(
    y: Sequence[int] | Array, p: Array, bins: int = CALIBRATION_BINS
) -> list[tuple[float, float, int]]:
    """Per non-empty equal-width score bin: (mean score, observed rate, rows)."""
    truth, scores = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1], right=True), 0, bins - 1)
    return [
        (float(scores[which == b].mean()), float(truth[which == b].mean()), int((which == b).sum()))
        for b in range(bins)
        if (which == b).any()
    ]


PRECISION_GOALS = (0.5, 0.8, 0.9)
RECALL_GOALS = (0.5, 0.8, 0.9)
REVIEW_GOALS = (0.01, 0.05, 0.1)


def threshold_table(
    y_true: Sequence[int] | Array,
    proba: Array,
    costs: tuple[float, float] | None = None,
) -> list[dict[str, Any]]:
    """Thresholds a rule author can choose on the holdout: the lowest reaching each
    precision in ``PRECISION_GOALS``, the highest keeping each recall in ``RECALL_GOALS``,
    and the one flagging each share of ``REVIEW_GOALS``; each with the precision, recall
    and share of events flagged at ``score >= threshold``. A goal no threshold reaches
    is left out. With ``costs`` (false positive, false negative), also the threshold of
    the lowest expected cost for calibrated scores, ``fp / (fp + fn)``, with the cost
    per event it had on these rows."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=np.float64)
    positives = int(y.sum())
    if len(y) == 0 or positives == 0:
        return []
    order = np.argsort(-p, kind="stable")
    ranked, hits = p[order], np.cumsum(y[order])
    flagged = np.arange(1, len(y) + 1)
    # Only cut between distinct scores: ``score >= t`` takes every tie.
    last = np.r_[ranked[1:] != ranked[:-1], True]
    precision, recall = hits / flagged, hits / positives

    def row(goal: str, k: int) -> dict[str, Any]:
        return {
            "goal": goal,
            "threshold": round(float(ranked[k]), 4),
            "precision": round(float(precision[k]), 4),
            "recall": round(float(recall[k]), 4),
            "flagged": round(float(flagged[k] / len(y)), 4),
        }

    out: list[dict[str, Any]] = []
    cuts = np.flatnonzero(last)
    for goal in PRECISION_GOALS:
        reached = cuts[precision[cuts] >= goal]
        if len(reached):
            out.append(row(f"precision >= {goal:g}", int(reached[-1])))
    for goal in RECALL_GOALS:
        reached = cuts[recall[cuts] >= goal]
        if len(reached):
            out.append(row(f"recall >= {goal:g}", int(reached[0])))
    for goal in REVIEW_GOALS:
        within = cuts[flagged[cuts] <= goal * len(y)]
        if len(within):
            out.append(row(f"review {goal:.0%} of events", int(within[-1])))
    if costs is not None:
        fp_cost, fn_cost = costs
        threshold = fp_cost / (fp_cost + fn_cost)
        acted = p >= threshold
        caught = int((acted & (y == 1)).sum())
        false_alarms = int(acted.sum()) - caught
        missed = positives - caught
        out.append(
            {
                "goal": f"lowest expected cost (false positive {fp_cost:g}, "
                f"false negative {fn_cost:g})",
                "threshold": round(threshold, 4),
                "precision": round(caught / acted.sum(), 4) if acted.any() else 0.0,
                "recall": round(caught / positives, 4),
                "flagged": round(float(acted.mean()), 4),
                "cost_per_event": round((fp_cost * false_alarms + fn_cost * missed) / len(y), 4),
            }
        )
    return out


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


def binary_verdict(
    champion: Mapping[str, float] | None,
    challenger: Mapping[str, float],
    *,
    margin: float,
) -> Verdict:
    """Promote a yes/no challenger when it is better by ``margin`` on ranking (ROC-AUC)
    or on the probabilities themselves (log loss), and worse beyond ``margin`` on
    neither: a challenger that ranks better but whose scores are miscalibrated cannot
    win. With no champion (or one without those metrics) the challenger serves."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    new_auc, new_ll = _value(challenger, "roc_auc"), _value(challenger, "log_loss")
    old_auc, old_ll = _value(champion, "roc_auc"), _value(champion, "log_loss")

    def decide(promote: bool, reason: str) -> Verdict:
        return Verdict(promote, "roc_auc+log_loss", old_auc, new_auc, margin, reason)

    if new_auc is None or new_ll is None:
        return decide(
            False, "the challenger has no roc_auc or log_loss on the holdout: keep the champion"
        )
    shown = f"roc_auc {new_auc:.3f}, log_loss {new_ll:.4f}"
    if old_auc is None or old_ll is None:
        why = "there is no champion" if champion is None else "the champion has no metrics"
        return decide(True, f"{shown} and {why} to compare with: promote")
    auc_gain, ll_gain = new_auc - old_auc, old_ll - new_ll
    compared = (
        f"roc_auc {new_auc:.3f} vs champion {old_auc:.3f} ({auc_gain:+.3f}), log_loss "
        f"{new_ll:.4f} vs {old_ll:.4f} ({-ll_gain:+.4f})"
    )
    slack = 1e-12  # a float sum must not turn "exactly the margin" into less
    if auc_gain < -margin - slack:
        return decide(False, f"{compared}: ranks worse beyond the margin {margin:g}: keep")
    if ll_gain < -margin - slack:
        return decide(
            False, f"{compared}: worse probabilities (log loss) beyond the margin {margin:g}: keep"
        )
    if auc_gain >= margin - slack or ll_gain >= margin - slack:
        better = "ranks better" if auc_gain >= margin - slack else "better probabilities"
        return decide(True, f"{compared}: {better} by the margin {margin:g}: promote")
    return decide(False, f"{compared}: not better by the margin {margin:g} on either: keep")
