"""Calibration: a model's raw score mapped to the probability of its label.

A tabular model is fit with weights that help it rank (the rare class weighted up,
recent rows weighted more), so its raw score over-states the rare class. The trainer
learns a monotone map from raw score to observed rate on rows the fit did not see
(``app.trainer.jobs.calibrate``) and stores it with the version; serving applies it, so
``scores.<model>`` is a probability a rule can threshold (``gte: 0.5`` means "more
likely than not"). Ranking is unchanged: the map only ever rises.

- ``platt``: ``sigmoid(a * logit(raw) + b)``, two numbers: for small calibration sets;
- ``isotonic``: a step function through ``(x, y)`` points, interpolated: for large ones;
- ``none``: the raw score (a version trained before calibration, or too few rows).

Pure numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

METHODS = ("none", "platt", "isotonic")
_EPS = 1e-12


def logit(p: Array) -> Array:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    out: Array = np.log(q) - np.log1p(-q)
    return out


@dataclass(frozen=True)
class Calibration:
    """A monotone map from a raw score to a probability (see the module docstring)."""

    method: str = "none"
    a: float = 1.0  # platt
    b: float = 0.0
    x: tuple[float, ...] = ()  # isotonic: raw scores, increasing
    y: tuple[float, ...] = ()  # isotonic: probabilities, non-decreasing
    n: int = 0  # rows it was fit on

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown calibration {self.method!r}: use one of {METHODS}")
        if self.method == "isotonic" and (len(self.x) != len(self.y) or len(self.x) < 2):
            raise ValueError("an isotonic calibration needs two or more (x, y) points")

    def apply(self, raw: Array) -> Array:
        """The calibrated probability of each raw score."""
        p = np.asarray(raw, dtype=np.float64)
        if self.method == "platt":
            out: Array = 1.0 / (1.0 + np.exp(-(self.a * logit(p) + self.b)))
            return out
        if self.method == "isotonic":
            return np.interp(p, self.x, self.y)
        return p

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "n": self.n}
        if self.method == "platt":
            out |= {"a": self.a, "b": self.b}
        if self.method == "isotonic":
            out |= {"x": list(self.x), "y": list(self.y)}
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> Calibration:
        """What ``to_json`` wrote; ``None`` (a version trained before calibration) is the
        identity. A damaged record is a ``ValueError`` naming what is wrong."""
        if raw is None:
            return cls()
        try:
            return cls(
                method=str(raw["method"]),
                a=float(raw.get("a", 1.0)),
                b=float(raw.get("b", 0.0)),
                x=tuple(float(v) for v in raw.get("x", ())),
                y=tuple(float(v) for v in raw.get("y", ())),
                n=int(raw.get("n", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the calibration record {dict(raw)} is damaged: {exc}") from exc
