"""Card payments on the accounts, with fraud drawn from what a model can see.

Fraud is likelier abroad, on a new device, at night (0-5 UTC), when the amount is unusually
large for the merchant category, in a risky category and on a young account; after the
drift (``generate(..., drift_at=...)``) small mobile-app and digital-goods payments, often
from a desktop, become the risky ones instead. One of the builders ``app.simulator.generate``
draws its stream from.
"""

from __future__ import annotations

import math
import random
from datetime import datetime

from app.simulator.outcomes import Labels
from app.simulator.shapes import Device, Transaction
from app.simulator.world import (
    ABROAD,
    CATEGORIES,
    CATEGORY_NAMES,
    CATEGORY_WEIGHTS,
    World,
    pick,
    sigmoid,
)

_RISKY_CATEGORIES = frozenset({"electronics", "digital_goods", "gambling", "jewelry",
                               "money_transfer"})  # fmt: skip


def build_transaction(
    rng: random.Random, world: World, event_id: str, when: datetime, *, drifted: bool = False
) -> tuple[Transaction, Labels]:
    account = rng.choice(world.accounts)
    category = pick(rng, CATEGORY_NAMES, CATEGORY_WEIGHTS)
    _, mu, sigma, merchants = CATEGORIES[category]
    foreign = rng.random() < 0.10
    country = account.country
    if foreign:
        country = rng.choice([c for c in ABROAD if c != account.country])
    if category == "cash_withdrawal":
        channel = "atm"
    elif category == "money_transfer":
        channel = pick(rng, ("transfer", "mobile_app"), (3, 1))
    elif category in ("digital_goods", "gambling"):
        channel = pick(rng, ("online", "mobile_app"), (1, 1))
    elif category in ("fuel", "grocery", "restaurants"):
        channel = pick(rng, ("card_present", "mobile_app"), (9, 1))
    else:
        channel = pick(rng, ("card_present", "online", "mobile_app"), (4, 4, 2))

    is_new = rng.random() < 0.12
    if channel in ("card_present", "atm"):
        kind = "pos" if channel == "card_present" else "atm"
        device_id = f"{kind}-{rng.randrange(10**6):06d}"
    else:
        kind = pick(rng, ("mobile", "desktop", "unknown"), (6, 3, 1))
        known = rng.choice(account.devices)
        device_id = f"{known}-new{rng.randrange(10**6):06d}" if is_new else known

    # A small share of amounts comes from a shifted distribution, so unusually large
    # amounts are more common than a single lognormal would give.
    inflated = rng.random() < 0.08
    amount = round(min(50_000.0, rng.lognormvariate(mu + (1.6 if inflated else 0), sigma)), 2)
    # How unusual the amount is for its category, judged from the amount itself as a
    # model would see it; capped so tiny amounts do not make fraud impossible.
    surprise = min(3.0, max(-1.0, (math.log(max(amount, 0.01)) - mu) / sigma))
    night = when.hour < 6

    logit = (
        -5.0
        + 2.2 * foreign
        + 2.0 * is_new
        + 1.5 * night
        + 1.4 * surprise
        + 0.8 * (category in _RISKY_CATEGORIES)
        + 0.9 * (account.age_days < 60)
    )
    if drifted:
        logit = _drifted_logit(channel, category, kind, amount)
    # One draw either way, so drift changes labels only, never the events.
    fraud = rng.random() < sigmoid(logit)
    event = Transaction(
        event_id=event_id,
        occurred_at=when,
        account_id=account.party_id,
        amount=amount,
        currency=account.currency,
        merchant=rng.choice(merchants),
        merchant_category=category,
        channel=channel,
        country=country,
        card_country=account.country,
        device=Device(device_id=device_id, kind=kind, is_new=is_new),
        attributes={"account_age_days": account.age_days},
    )
    return event, {"fraud": fraud}


def _drifted_logit(channel: str, category: str, kind: str, amount: float) -> float:
    """Fraud after the drift: fraudsters moved to small app and digital payments.

    The old drivers (abroad, new device, night, large amount, risky category, young
    account) no longer count; every term here is a feature a model sees.
    """
    return (
        -5.0
        + 2.6 * (channel == "mobile_app")
        + 1.8 * (category in ("digital_goods", "gambling"))
        + 1.6 * (amount < 20)
        + 1.0 * (kind == "desktop")
    )
