"""Drift, per model in service: is the world still the one the champion learned?

Three signals, recent decisions against the champion's training window (its reference,
written by the trainer into the version's params):

- population stability (PSI) of its main input features and of its score;
- the label rate (share of positive outcomes) now and in training;
- for the tabular models, the champion's ROC-AUC on its recent labelled decisions
  against the ROC-AUC it had on its training holdout — the signal that catches a
  changed *pattern* (concept drift), which moves neither the features nor the mix.

Only decisions the current champion scored count. ``measure`` reads the store and
computes; the trainer acts on ``DriftStatus.reasons``; ``arbiter models show`` prints it
and the metrics export it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.declarations.build import build_model
from app.declarations.spec import DeclaredModel
from app.inference import features
from app.store.registry import ModelRegistry
from app.store.training import recent_decisions
from app.trainer.jobs import drift
from app.trainer.jobs.dataset import STORED, target
from app.trainer.jobs.evaluate import binary_metrics
from schemas import EventCore

MIN_LABELLED_FOR_AUC = 100


@dataclass(frozen=True)
class DriftLimits:
    window: int = 2_000
    psi_threshold: float = 0.25
    auc_drop: float = 0.05


@dataclass(frozen=True)
class DriftStatus:
    model: str
    version: int | None
    decisions: int  # recent decisions of the champion read
    labelled: int  # of which with an outcome
    report: drift.DriftReport | None
    recent_auc: float | None
    holdout_auc: float | None
    reasons: tuple[str, ...] = ()  # why it counts as drifting; empty = it does not
    note: str = ""  # why a signal is missing
    psi: dict[str, float] = field(default_factory=dict)

    @property
    def drifting(self) -> bool:
        return bool(self.reasons)


async def measure(
    engine: AsyncEngine,
    registry: ModelRegistry,
    model: str,
    limits: DriftLimits,
    declared: DeclaredModel | None,
) -> DriftStatus:
    """The drift of ``model``'s champion now (and the metrics updated to match).
    ``declared`` is its declaration (None: its type is not served, nothing is measured)."""
    champion = await registry.champion(model)
    if champion is None:
        return DriftStatus(model, None, 0, 0, None, None, None, note="no champion")
    if declared is None:
        return DriftStatus(
            model,
            champion.version,
            0,
            0,
            None,
            None,
            None,
            note="its event type is not served here (ARBITER_EVENT_TYPES): not measured",
        )
    event_type = model.split(".", 1)[0]
    tag = champion.meta.tag
    recent = [
        d
        for d in await recent_decisions(engine, event_type, limits.window)
        if d.model_versions.get(model) == tag
    ]
    holdout_auc = champion.meta.metrics.get("roc_auc")
    if not recent:
        return DriftStatus(
            model, champion.version, 0, 0, None, None, holdout_auc, note="no recent decisions"
        )
    scores = [d.scores.get(declared.score) for d in recent]
    labels = [target(declared, d.labels) if d.labels is not None else None for d in recent]
    reasons: list[str] = []
    raw = champion.meta.params.get("drift")
    report: drift.DriftReport | None = None
    note = ""
    if isinstance(raw, dict):
        decoder = build_model(declared.declaration, STORED)
        events: list[EventCore] = [decoder.model_validate(d.payload) for d in recent]
        report = _population(model, drift.DriftReference.from_json(raw), events, scores, labels)
        worst = report.worst
        if worst is not None and worst[1] >= limits.psi_threshold:
            reasons.append(
                f"PSI of {worst[0]} is {worst[1]:.2f} (threshold {limits.psi_threshold})"
            )
    else:
        note = f"{tag} has no drift reference (trained before drift tracking): PSI not measured"
    found = _recent_auc(model, scores, labels) if declared.family == "tabular" else None
    recent_auc = found[0] if found else None
    if found is not None and holdout_auc is not None:
        metrics.DRIFT_AUC.labels(model=model, window="holdout").set(holdout_auc)
        # A small window's ROC-AUC is noisy: the drop must also exceed two standard errors.
        needed = max(limits.auc_drop, 2 * found[1])
        if holdout_auc - found[0] >= needed:
            reasons.append(
                f"ROC-AUC on recent outcomes {found[0]:.3f} vs {holdout_auc:.3f} on its "
                f"holdout (drop threshold {needed:.3f})"
            )
    return DriftStatus(
        model,
        champion.version,
        len(recent),
        sum(1 for v in labels if v is not None),
        report,
        recent_auc,
        holdout_auc,
        tuple(reasons),
        note,
        dict(report.psi) if report else {},
    )


def _population(
    model: str,
    reference: drift.DriftReference,
    events: list[EventCore],
    scores: list[object],
    labels: list[bool | str | None],
) -> drift.DriftReport:
    """PSI of the watched features and the score, and the label rate; exported."""
    rows: list[features.Row] = []
    if reference.features:
        numeric = [f.name for f in reference.features if f.kind == drift.NUMBER]
        categorical = [f.name for f in reference.features if f.kind != drift.NUMBER]
        rows = features.Rows(numeric, categorical).fresh_rows(events, features.History())
    binary = [v for v in labels if isinstance(v, bool)]
    report = drift.compare(
        reference,
        rows or [{} for _ in events],
        scores=[s for s in scores if isinstance(s, int | float | str)],
        labels=binary or None,
    )
    for name, value in report.psi.items():
        metrics.DRIFT_PSI.labels(model=model, feature=name).set(value)
    if report.label_rate is not None:
        metrics.DRIFT_LABEL_RATE.labels(model=model, window="recent").set(report.label_rate)
    if report.reference_label_rate is not None:
        metrics.DRIFT_LABEL_RATE.labels(model=model, window="training").set(
            report.reference_label_rate
        )
    return report


def _recent_auc(
    model: str, scores: list[object], labels: list[bool | str | None]
) -> tuple[float, float] | None:
    """The champion's ROC-AUC on the recent decisions that have an outcome, with its
    standard error (None with too few of them or only one class)."""
    pairs = [
        (int(v), float(s))
        for v, s in zip(labels, scores, strict=True)
        if isinstance(v, bool) and isinstance(s, int | float)
    ]
    positives = sum(v for v, _ in pairs)
    if len(pairs) < MIN_LABELLED_FOR_AUC or not 0 < positives < len(pairs):
        return None
    found = binary_metrics(np.asarray([v for v, _ in pairs]), np.asarray([s for _, s in pairs]))
    auc = found.get("roc_auc")
    if auc is None:
        return None
    metrics.DRIFT_AUC.labels(model=model, window="recent").set(auc)
    return auc, auc_standard_error(auc, positives, len(pairs) - positives)


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982): the standard error of a ROC-AUC estimated from
    ``positives`` and ``negatives`` examples."""
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    return float(np.sqrt(max(variance, 0.0)))
