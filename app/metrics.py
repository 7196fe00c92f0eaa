"""Prometheus metrics of the running service (served over HTTP by a later issue).

Names follow Prometheus conventions: ``arbiter_<thing>_total`` counters, bounded labels
(event types, reasons, results — never an event id).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RULES_RELOADS = Counter(
    "arbiter_rules_reloads_total",
    "Rule-file changes seen by a running consumer, by result (applied or refused).",
    ["result"],
)

OUTCOMES = Counter(
    "arbiter_outcomes_total",
    "Outcomes received, by event type and result: stored (its decision is known), "
    "before_decision (kept; joins when the decision is stored — or never, for an event "
    "Arbiter did not see) and duplicate (the same report again, not written).",
    ["type", "result"],
)

TRAINER_RUNS = Counter(
    "arbiter_trainer_runs_total",
    "Training runs by model and result: promoted, kept (a challenger, not better), "
    "skipped (not enough data) and failed.",
    ["model", "result"],
)

DRIFT_PSI = Gauge(
    "arbiter_drift_psi",
    "Population stability index of a model's main input features and its score, recent "
    "decisions against its training window (0.1 notice, 0.25 alert).",
    ["model", "feature"],
)

DRIFT_LABEL_RATE = Gauge(
    "arbiter_drift_label_rate",
    "Share of positive outcomes among a model's recent labelled decisions (window=recent) "
    "and in its training data (window=training).",
    ["model", "window"],
)

DRIFT_AUC = Gauge(
    "arbiter_drift_recent_auc",
    "The champion's ROC-AUC on its recent labelled decisions (window=recent) and on its "
    "training holdout (window=holdout).",
    ["model", "window"],
)

WEBHOOK_DELIVERIES = Counter(
    "arbiter_webhook_deliveries_total",
    "Webhook delivery attempts by endpoint and result: delivered (2xx), retry (5xx, 408, "
    "429, timeout or connection error; tried again later) and failed (a 4xx, or the last "
    "allowed attempt: the delivery is dead-lettered until `arbiter deliveries retry`).",
    ["endpoint", "result"],
)
