"""The first models of each event type: how they are trained, loaded and used on a batch.

- ``transaction.fraud``: histogram gradient boosting on transaction features; adds
  ``fraud`` (a probability).
- ``order.risk``: histogram gradient boosting on order features; adds ``risk``
  (probability of a problem order: cancelled, returned, charged back).
- ``ticket.category`` and ``ticket.urgency``: TF-IDF (word 1-2 grams) + logistic
  regression; add ``category``/``urgency`` and their ``*_confidence``.

At first start-up (no champion on disk) each model is trained on simulator data with
planted patterns and saved as version 1; later the trainer (a later issue) adds
versions from real outcomes. Scoring is one ``predict_proba`` per model per batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.pipeline import Pipeline

from app.errors import ConfigError
from app.inference import features
from app.inference.artifacts import (
    ModelMeta,
    champion_version,
    load_model,
    next_version,
    now_iso,
    save_model,
)
from schemas import EventBase, Order, Ticket, Transaction

Score = float | str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    event_type: str
    kind: str  # "binary" | "multiclass"
    score: str  # the score key this model writes
    label: str  # the simulator label it learns
    train_size: int
    feature_names: tuple[str, ...]
    build: Callable[[], Any]
    matrix: Callable[[Sequence[Any]], Any]


def _tabular() -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        max_iter=150, learning_rate=0.08, max_leaf_nodes=15, l2_regularization=1.0, random_state=0
    )


def _text() -> Pipeline:
    return Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)),
            ("clf", LogisticRegression(max_iter=1000, C=4.0)),
        ]
    )


def _ticket_texts(events: Sequence[Ticket]) -> list[str]:
    return [features.ticket_text(e) for e in events]


def _tx_matrix(events: Sequence[Transaction]) -> np.ndarray[Any, Any]:
    return np.asarray(features.transaction_matrix(events), dtype=np.float64)


def _order_matrix(events: Sequence[Order]) -> np.ndarray[Any, Any]:
    return np.asarray(features.order_matrix(events), dtype=np.float64)


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "transaction.fraud", "transaction", "binary", "fraud", "fraud", 30_000,
        features.TRANSACTION_FEATURES, _tabular, _tx_matrix,
    ),
    ModelSpec(
        "order.risk", "order", "binary", "risk", "problem", 20_000,
        features.ORDER_FEATURES, _tabular, _order_matrix,
    ),
    ModelSpec(
        "ticket.category", "ticket", "multiclass", "category", "category", 4_000,
        ("text",), _text, _ticket_texts,
    ),
    ModelSpec(
        "ticket.urgency", "ticket", "multiclass", "urgency", "urgency", 4_000,
        ("text",), _text, _ticket_texts,
    ),
)  # fmt: skip


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    meta: ModelMeta
    estimator: Any


def train_model(spec: ModelSpec, *, seed: int = 1) -> tuple[Any, dict[str, float], tuple[str, ...]]:
    """Fit on simulator data (75 %) and measure on the rest. Returns estimator, metrics, classes."""
    from app.simulator.generate import training_set

    events, labels = training_set(spec.event_type, spec.train_size, seed=seed)
    y_all = [labels_[spec.label] for labels_ in labels]
    cut = int(len(events) * 0.75)  # time-ordered: evaluate on the most recent quarter
    x_train, x_test = spec.matrix(events[:cut]), spec.matrix(events[cut:])
    y_train, y_test = y_all[:cut], y_all[cut:]
    estimator = spec.build()
    if spec.kind == "binary":
        y_tr = np.asarray(y_train, dtype=int)
        positives = max(int(y_tr.sum()), 1)
        # Weight the rare class up so the score is usable at low prevalence.
        weight = np.where(y_tr == 1, (len(y_tr) - positives) / positives, 1.0)
        estimator.fit(x_train, y_tr, sample_weight=np.sqrt(weight))
        proba = estimator.predict_proba(x_test)[:, 1]
        metrics = {"roc_auc": float(roc_auc_score(np.asarray(y_test, dtype=int), proba))}
        return estimator, metrics, ()
    estimator.fit(x_train, y_train)
    predicted = estimator.predict(x_test)
    metrics = {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "macro_f1": float(f1_score(y_test, predicted, average="macro")),
    }
    return estimator, metrics, tuple(str(c) for c in estimator.classes_)


def _warm_up(model: LoadedModel) -> None:
    """The first predict spins up thread pools (~0.3 s): pay it at start-up, not on an event."""
    if model.spec.kind == "binary":
        model.estimator.predict_proba(np.zeros((1, len(model.meta.features))))
    else:
        model.estimator.predict_proba(["warm up"])


def _await_champion(models_dir: Path, name: str, timeout: float = 60.0) -> int:
    """The champion version, waiting for a concurrent trainer to move the pointer."""
    deadline = time.monotonic() + timeout
    while (version := champion_version(models_dir, name)) is None:
        if time.monotonic() > deadline:
            raise ConfigError(
                f"{models_dir / name} has a model version but no CHAMPION pointer after "
                f"{timeout:.0f}s: another process may have died while saving; delete the "
                "folder to retrain."
            )
        time.sleep(0.2)
    return version


def load_or_train(
    models_dir: Path, *, on_progress: Callable[[str], None] | None = None
) -> dict[str, LoadedModel]:
    """Load every champion; train and save version 1 of any model that has none."""
    loaded: dict[str, LoadedModel] = {}
    for spec in SPECS:
        version = champion_version(models_dir, spec.name)
        if version is None:
            if on_progress:
                on_progress(f"training {spec.name} v1 on simulator data")
            estimator, metrics, classes = train_model(spec)
            meta = ModelMeta(
                name=spec.name,
                version=next_version(models_dir, spec.name),
                kind=spec.kind,
                features=spec.feature_names,
                metrics=metrics,
                created_at=now_iso(),
                trained_on=f"simulator seed=1 n={spec.train_size}",
                classes=classes,
            )
            # Another process may train it at the same moment: then load theirs.
            with contextlib.suppress(FileExistsError):
                save_model(models_dir, meta, estimator)
            version = _await_champion(models_dir, spec.name)
        meta, estimator = load_model(models_dir, spec.name, version)
        model = LoadedModel(spec, meta, estimator)
        _warm_up(model)
        loaded[spec.name] = model
    return loaded


class Scorer:
    """Scores a batch of one event type with every model of that type."""

    def __init__(self, models: Mapping[str, LoadedModel]) -> None:
        self._by_type: dict[str, list[LoadedModel]] = {}
        for model in models.values():
            self._by_type.setdefault(model.spec.event_type, []).append(model)

    def versions(self, event_type: str) -> dict[str, str]:
        return {m.spec.name: m.meta.tag for m in self._by_type.get(event_type, [])}

    def score(self, event_type: str, events: Sequence[EventBase]) -> list[dict[str, Score]]:
        scores: list[dict[str, Score]] = [{} for _ in events]
        if not events:
            return scores
        for model in self._by_type.get(event_type, []):
            proba = model.estimator.predict_proba(model.spec.matrix(events))
            if model.spec.kind == "binary":
                for row, p in zip(scores, proba[:, 1], strict=True):
                    row[model.spec.score] = round(float(p), 6)
            else:
                classes = model.estimator.classes_
                best = proba.argmax(axis=1)
                for row, idx, p in zip(scores, best, proba, strict=True):
                    row[model.spec.score] = str(classes[idx])
                    row[f"{model.spec.score}_confidence"] = round(float(p[idx]), 6)
        return scores
