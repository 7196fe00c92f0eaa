"""Prometheus metrics of the running service (served over HTTP by a later issue).

Names follow Prometheus conventions: ``arbiter_<thing>_total`` counters, bounded labels
(event types, reasons, results — never an event id).
"""

from __future__ import annotations

from prometheus_client import Counter

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
