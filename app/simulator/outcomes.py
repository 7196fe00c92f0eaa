"""The outcomes the simulator reports back: what really happened to each valid event.

Pure and seeded like the rest of the simulator. ``generate(..., outcomes=True)`` uses
these to put, for every valid event, one ``schemas.Outcome`` on ``outcomes.<type>`` some
realistic, bounded time after the event (simulated time; lognormal, truncated to its
bounds):

- transactions: ``{"fraud": bool}`` after 1-36 h, from ``chargebacks`` when the cardholder
  disputes the payment, otherwise from ``fraud-review`` clearing it (sooner);
- orders: ``{"status": "fulfilled" | "cancelled" | "returned" | "chargeback"}`` after
  2-72 h, from ``fulfilment``;
- tickets: ``{"category", "urgency", "sentiment"}`` after 10 min-12 h, from ``helpdesk``,
  and only for about 80 % of them: agents confirm most tickets, not all.

Labels are sent with noise, as people make mistakes: with probability ``label_noise``
fraud is flipped, an order status replaced by another, and each ticket label replaced by
another class of its own. About 1 % of outcomes are delivered a second time, byte for
byte, a little later, as an at-least-once sender does.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist

from app.simulator.text import TICKET_CATEGORIES
from schemas import EventBase, Outcome

Labels = Mapping[str, bool | str]

ORDER_STATUSES = ("fulfilled", "cancelled", "returned", "chargeback")
URGENCIES = ("high", "medium", "low")
SENTIMENTS = ("negative", "neutral", "positive")
TICKET_CLASSES: Mapping[str, tuple[str, ...]] = {
    "category": TICKET_CATEGORIES,
    "urgency": URGENCIES,
    "sentiment": SENTIMENTS,
}
TICKET_COVERAGE = 0.8  # share of tickets an agent confirms
REDELIVERY_RATE = 0.01  # share of outcomes sent twice


@dataclass(frozen=True)
class Delay:
    """A lognormal delay with median ``median``, truncated to [low, high]."""

    median: timedelta
    sigma: float
    low: timedelta
    high: timedelta

    def draw(self, rng: random.Random) -> timedelta:
        """One draw from ``rng`` whatever the bounds (inverse transform), so the outcomes
        of two runs stay in step when only their labels differ."""
        mu = math.log(self.median.total_seconds())
        lo = _NORMAL.cdf((math.log(self.low.total_seconds()) - mu) / self.sigma)
        hi = _NORMAL.cdf((math.log(self.high.total_seconds()) - mu) / self.sigma)
        z = _NORMAL.inv_cdf(lo + rng.random() * (hi - lo))
        seconds = round(math.exp(mu + self.sigma * z))
        return min(self.high, max(self.low, timedelta(seconds=seconds)))


_NORMAL = NormalDist()
_HOUR = timedelta(hours=1)
# source: how long until it reports
DELAYS: Mapping[str, Delay] = {
    "chargebacks": Delay(14 * _HOUR, 0.6, 1 * _HOUR, 36 * _HOUR),
    "fraud-review": Delay(5 * _HOUR, 0.7, 1 * _HOUR, 36 * _HOUR),
    "fulfilment": Delay(20 * _HOUR, 0.7, 2 * _HOUR, 72 * _HOUR),
    "helpdesk": Delay(90 * timedelta(minutes=1), 0.9, timedelta(minutes=10), 12 * _HOUR),
}
_REDELIVERY_GAP = (60.0, 2 * 3600.0)  # seconds after the first delivery


@dataclass(frozen=True)
class Observation:
    """One outcome as sent: its body, the labels in it, and when it goes out."""

    value: bytes  # ``schemas.Outcome`` JSON
    labels: Labels  # as sent, noise included
    sent_at: tuple[datetime, ...]  # the observed time; a redelivery adds a later one


def outcome_labels(event_type: str, truth: Labels) -> dict[str, bool | str]:
    """The ground truth as an outcome carries it (an order reports its status only)."""
    if event_type == "transaction":
        return {"fraud": bool(truth["fraud"])}
    if event_type == "order":
        return {"status": str(truth["status"])}
    return {name: str(truth[name]) for name in TICKET_CLASSES}


def add_noise(
    rng: random.Random, event_type: str, labels: Labels, label_noise: float
) -> dict[str, bool | str]:
    """``labels`` with mistakes at rate ``label_noise``; draws the same count whatever it is."""
    noisy = dict(labels)
    if event_type == "transaction":
        if rng.random() < label_noise:
            noisy["fraud"] = not noisy["fraud"]
    elif event_type == "order":
        if rng.random() < label_noise:
            noisy["status"] = rng.choice([s for s in ORDER_STATUSES if s != noisy["status"]])
    else:
        for name, classes in TICKET_CLASSES.items():
            if rng.random() < label_noise:
                noisy[name] = rng.choice([c for c in classes if c != noisy[name]])
    return noisy


def _source(event_type: str, labels: Labels) -> str:
    if event_type == "transaction":
        return "chargebacks" if labels["fraud"] else "fraud-review"
    return "fulfilment" if event_type == "order" else "helpdesk"


def observe(rng: random.Random, event: EventBase, labels: Labels) -> Observation | None:
    """The outcome of ``event`` carrying ``labels``, or None when nobody confirms it."""
    if event.event_type == "ticket" and rng.random() >= TICKET_COVERAGE:
        return None
    source = _source(event.event_type, labels)
    observed_at = event.occurred_at + DELAYS[source].draw(rng)
    outcome = Outcome(
        event_id=event.event_id,
        event_type=event.event_type,
        partition_key=event.partition_key,
        occurred_at=observed_at,
        labels=dict(labels),
        source=source,
    )
    sent_at: tuple[datetime, ...] = (observed_at,)
    if rng.random() < REDELIVERY_RATE:
        sent_at += (observed_at + timedelta(seconds=round(rng.uniform(*_REDELIVERY_GAP))),)
    return Observation(outcome.model_dump_json().encode(), labels, sent_at)
