"""The charts of a training report, computed from the holdout (``report.py`` lays them out).

Binary models (``Curves``) get ROC, precision-recall, calibration and score
distributions for the challenger and, when there is one, the champion, all on the same
holdout. Text heads (``Confusion``) get one confusion matrix per head and model. A chart
that cannot be drawn (a holdout with one class has no ROC curve) is replaced by a note
saying why, never by an exception.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from app.trainer.report.plots import Series, bar_chart, heatmap, histogram, line_chart

CALIBRATION_BINS = 10
TOP_IMPORTANCES = 20


@dataclass(frozen=True)
class Curves:
    """Binary models: one holdout's labels and both models' P(positive) on it."""

    y_true: Sequence[int]
    champion: Sequence[float] | None  # None when there is no champion yet
    challenger: Sequence[float]


@dataclass(frozen=True)
class Confusion:
    """One text head on the holdout: true and predicted classes, ``classes`` in order."""

    head: str
    classes: Sequence[str]
    y_true: Sequence[str]
    champion: Sequence[str] | None
    challenger: Sequence[str]


@dataclass(frozen=True)
class Chart:
    """One drawn chart: the file it is saved as, a caption for the page, the SVG."""

    file: str
    caption: str
    svg: str


def model_name(role: str, version: int | None) -> str:
    """``champion v3``; just the role when the version is not known."""
    return role if version is None else f"{role} v{version}"


def binary_charts(curves: Curves, champion: str, challenger: str) -> tuple[list[Chart], list[str]]:
    """ROC, precision-recall, calibration and score charts, plus notes on what is missing.

    ``champion`` and ``challenger`` are the names the legends use. Raises ``ValueError``
    when the inputs contradict each other (lengths, labels not 0/1, probabilities
    outside [0, 1]): that is a bug in the caller, not a property of the data.
    """
    labels = np.asarray(curves.y_true, dtype=np.float64).ravel()
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("holdout labels (y_true) must be 0 or 1")
    y = labels.astype(np.int64)
    models: list[tuple[str, np.ndarray]] = []
    for name, probs in ((champion, curves.champion), (challenger, curves.challenger)):
        if probs is None:
            continue
        p = np.asarray(probs, dtype=np.float64).ravel()
        if p.shape != y.shape:
            raise ValueError(f"{name}: {p.size} probabilities for {y.size} holdout labels")
        if not np.all((p >= 0) & (p <= 1)):
            raise ValueError(f"{name}: probabilities must be finite and within [0, 1]")
        models.append((name, p))
    if y.size == 0:
        return [], ["No curves: the holdout is empty."]
    charts: list[Chart] = []
    notes: list[str] = []
    positives = int(y.sum())
    if 0 < positives < y.size:
        charts.extend(_ranking_charts(y, models))
    else:
        kind = "positive" if positives else "negative"
        notes.append(
            f"ROC and precision-recall curves are not drawn: all {y.size} holdout labels "
            f"are {kind}, and both curves need positives and negatives."
        )
    calibration = []
    for name, p in models:
        observed, predicted = calibration_curve(y, p, n_bins=CALIBRATION_BINS, strategy="quantile")
        calibration.append(Series(name, predicted, observed))
    charts.append(
        Chart(
            "calibration.svg",
            f"Reliability: holdout rows in {CALIBRATION_BINS} equal-sized bins of predicted "
            "probability; a calibrated model follows the diagonal.",
            line_chart(
                calibration,
                title="Calibration",
                x_label="mean predicted probability",
                y_label="observed positive rate",
                diagonal=True,
            ),
        )
    )
    charts.append(
        Chart(
            "scores.svg",
            "Distribution of predicted probabilities on the holdout.",
            histogram(
                [(name, p.tolist()) for name, p in models],
                title="Score distribution",
                x_label="predicted probability",
                x_range=(0.0, 1.0),
            ),
        )
    )
    return charts, notes


def _ranking_charts(y: np.ndarray, models: list[tuple[str, np.ndarray]]) -> list[Chart]:
    """ROC and precision-recall, for a holdout known to hold both classes."""
    roc, pr = [], []
    for name, p in models:
        fpr, tpr, _ = roc_curve(y, p)
        roc.append(Series(f"{name} (AUC {roc_auc_score(y, p):.3f})", fpr, tpr))
        precision, recall, _ = precision_recall_curve(y, p)
        pr.append(Series(f"{name} (AP {average_precision_score(y, p):.3f})", recall, precision))
    rate = float(y.mean())
    pr.append(Series(f"positive rate {rate:.3f}", (0.0, 1.0), (rate, rate), dashed=True))
    return [
        Chart(
            "roc.svg",
            "ROC: true-positive rate against false-positive rate over every threshold; "
            "the diagonal is chance.",
            line_chart(
                roc,
                title="ROC curve",
                x_label="false-positive rate",
                y_label="true-positive rate",
                diagonal=True,
            ),
        ),
        Chart(
            "pr.svg",
            "Precision against recall over every threshold; the dashed line is the "
            "precision of flagging everything (the positive rate).",
            line_chart(pr, title="Precision-recall", x_label="recall", y_label="precision"),
        ),
    ]


def importance_chart(importances: Sequence[tuple[str, float]]) -> Chart | None:
    """The largest importances by magnitude, largest first; None when there are none."""
    if not importances:
        return None
    ranked = sorted(importances, key=lambda item: -abs(item[1]))[:TOP_IMPORTANCES]
    return Chart(
        "importance.svg",
        f"Feature importance of the challenger (largest {len(ranked)} of {len(importances)}).",
        bar_chart(ranked, title="Feature importance", x_label="importance"),
    )


def slug(text: str) -> str:
    """``ticket.category`` -> ``ticket-category``: safe in a file name and a URL."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "head"


def confusion_matrix(
    classes: Sequence[str], y_true: Sequence[str], y_pred: Sequence[str]
) -> tuple[list[str], list[list[int]]]:
    """Counts of (true, predicted); classes seen but not listed are appended, so none is lost."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_pred)} predictions for {len(y_true)} true classes")
    labels = list(dict.fromkeys([*classes, *y_true, *y_pred]))
    index = {label: i for i, label in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for truth, guess in zip(y_true, y_pred, strict=True):
        counts[index[truth]][index[guess]] += 1
    return labels, counts


def confusion_charts(
    confusions: Sequence[Confusion], champion: str, challenger: str
) -> list[Chart]:
    """One heatmap per head per model: ``confusion-<head>-<champion|challenger>.svg``."""
    charts = []
    for c in confusions:
        for role, name, predicted in (
            ("champion", champion, c.champion),
            ("challenger", challenger, c.challenger),
        ):
            if predicted is None:
                continue
            labels, counts = confusion_matrix(c.classes, c.y_true, predicted)
            right = sum(counts[i][i] for i in range(len(labels)))
            accuracy = f", accuracy {right / len(c.y_true):.3f}" if c.y_true else ""
            title = f"{c.head}: {name}{accuracy}"
            svg = heatmap(
                counts or [[0]],
                rows=labels or ["(none)"],
                cols=labels or ["(none)"],
                title=title,
                x_label="predicted class",
                y_label="true class",
            )
            caption = f"{c.head}, {name}: holdout tickets by true class (rows) and prediction."
            charts.append(Chart(f"confusion-{slug(c.head)}-{role}.svg", caption, svg))
    return charts
