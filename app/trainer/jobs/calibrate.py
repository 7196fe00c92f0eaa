"""Fitting the calibration of a yes/no model (``app.inference.calibration``): a monotone
map from its raw score to the observed rate, learnt on rows the fit did not see.

The method is chosen by the data's size: isotonic regression is the more flexible map
but over-fits a small set, so it is used from ``ISOTONIC_MIN_ROWS`` rows with at least
``ISOTONIC_MIN_CLASS`` of each outcome; Platt scaling (a logistic regression on the raw
logit, two numbers) below that. A set with one outcome only cannot calibrate: ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from app.inference.calibration import Calibration, logit

Array = npt.NDArray[Any]

ISOTONIC_MIN_ROWS = 2_000
ISOTONIC_MIN_CLASS = 100
CALIBRATION_SHARE = 0.2  # of the training rows, the newest: held out of the fit for it
CROSS_FIT_BELOW = 5_000  # under this many rows, every row is scored out of fold instead
CALIBRATION_FOLDS = 5


def fit_calibration(raw: Array, y: Sequence[int] | Array) -> Calibration:
    """The calibration of scores ``raw`` for outcomes ``y`` (1 = positive)."""
    p = np.asarray(raw, dtype=np.float64)
    truth = np.asarray(y, dtype=int)
    if p.shape != truth.shape or p.ndim != 1:
        raise ValueError(f"{truth.shape} outcomes but scores of shape {p.shape}")
    n, positives = len(truth), int(truth.sum())
    if positives in (0, n):
        return Calibration("none", n=n)
    if n >= ISOTONIC_MIN_ROWS and min(positives, n - positives) >= ISOTONIC_MIN_CLASS:
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(p, truth)
        # Never exactly 0 or 1: a probability of certainty costs an infinite log loss.
        floor = 0.5 / n
        ys = np.clip(np.asarray(iso.y_thresholds_, dtype=np.float64), floor, 1 - floor)
        xs = np.asarray(iso.X_thresholds_, dtype=np.float64)
        if len(xs) >= 2:
            return Calibration("isotonic", x=tuple(xs.tolist()), y=tuple(ys.tolist()), n=n)
    platt = LogisticRegression(C=1e4, max_iter=1_000)
    platt.fit(logit(p).reshape(-1, 1), truth)
    a, b = float(platt.coef_[0][0]), float(platt.intercept_[0])
    if a <= 0:  # the scores do not rise with the outcome here: keep the rate only
        return Calibration("platt", a=0.0, b=float(np.log(positives / (n - positives))), n=n)
    return Calibration("platt", a=a, b=b, n=n)


def calibration_cut(n: int) -> int:
    """Of ``n`` training rows in time order, how many the fit uses before calibrating on
    the rest (the newest ``CALIBRATION_SHARE``)."""
    return n - max(1, int(n * CALIBRATION_SHARE))
