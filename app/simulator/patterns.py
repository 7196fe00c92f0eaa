"""Planted correlations: two rare multi-event patterns the shipped correlation rules look for.

- card testing: 3-4 large online payments on one account from 3-4 countries within a
  few minutes, back to back in the stream (``card_testing_burst``);
- account takeover: a password-reset / locked-out ticket from an account holder, then
  within the hour a large transfer or online payment on that same account
  (``takeover_ticket``, then ``takeover_payment`` when ``app.simulator.generate``'s
  stream reaches its time).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from app.simulator.outcomes import Labels
from app.simulator.shapes import Device, Ticket, Transaction
from app.simulator.text import TAKEOVER_SUBJECTS
from app.simulator.tickets import ticket_from_labels
from app.simulator.world import ABROAD, CATEGORIES, Party, World, pick
from schemas import EventBase

BURST_RATE = 0.005  # per transaction drawn: ~6 bursts in 3,000 mixed events
_BURST_FRAUD = 0.9  # most bursts are a stolen card being tested; a few are a busy buyer
_BURST_CATEGORIES = ("electronics", "digital_goods", "jewelry", "gambling", "travel")
TAKEOVER_RATE = 0.006  # per ticket drawn: ~4 takeovers in 3,000 mixed events


def _payment(
    rng: random.Random,
    account: Party,
    event_id: str,
    when: datetime,
    *,
    amount: float,
    category: str,
    channel: str,
    country: str,
    device_id: str,
) -> Transaction:
    return Transaction(
        event_id=event_id,
        occurred_at=when,
        account_id=account.party_id,
        amount=amount,
        currency=account.currency,
        merchant=rng.choice(CATEGORIES[category][3]),
        merchant_category=category,
        channel=channel,
        country=country,
        card_country=account.country,
        device=Device(device_id=device_id, kind=pick(rng, ("desktop", "unknown"), (2, 1)),
                      is_new=True),
        attributes={"account_age_days": account.age_days},
    )  # fmt: skip


def card_testing_burst(
    rng: random.Random, world: World, seed: int, ids: Iterator[int], when: datetime
) -> list[tuple[EventBase, Labels]]:
    """3-4 payments over 500 on one account from as many countries, 20-90 s apart."""
    account = rng.choice(world.accounts)
    countries = rng.sample([c for c in ABROAD if c != account.country], k=rng.randint(3, 4))
    device_id = f"dev-{seed}-x{rng.randrange(10**6):06d}"  # the tester's own machine
    fraud = rng.random() < _BURST_FRAUD
    events: list[tuple[EventBase, Labels]] = []
    for country in countries:
        category = rng.choice(_BURST_CATEGORIES)
        amount = round(rng.uniform(510, 1900), 2)
        event_id = f"txn-{seed}-{next(ids):08d}"
        tx = _payment(rng, account, event_id, when, amount=amount, category=category,
                      channel="online", country=country, device_id=device_id)  # fmt: skip
        events.append((tx, {"fraud": fraud}))
        when += timedelta(seconds=rng.uniform(20, 90))
    return events


def takeover_ticket(
    rng: random.Random, world: World, event_id: str, when: datetime
) -> tuple[Ticket, Labels, Party]:
    account = rng.choice(world.accounts)
    urgency = pick(rng, ("high", "medium"), (3, 1))
    sentiment = pick(rng, ("negative", "neutral"), (2, 1))
    subject = rng.choice(TAKEOVER_SUBJECTS)
    ticket, labels = ticket_from_labels(
        rng, account, event_id, when, "account", urgency, sentiment, subject
    )
    return ticket, labels, account


def takeover_payment(
    rng: random.Random, account: Party, event_id: str, when: datetime
) -> tuple[Transaction, Labels]:
    """The money moved out of a taken-over account: large, by transfer or online."""
    if rng.random() < 0.6:
        category, channel = "money_transfer", "transfer"
    else:
        category, channel = rng.choice(("electronics", "jewelry")), "online"
    amount = round(min(50_000.0, 2000 + rng.lognormvariate(7.5, 0.6)), 2)
    country = account.country if rng.random() < 0.5 else rng.choice(ABROAD)
    device_id = f"{rng.choice(account.devices)}-new{rng.randrange(10**6):06d}"
    tx = _payment(rng, account, event_id, when, amount=amount, category=category,
                  channel=channel, country=country, device_id=device_id)  # fmt: skip
    return tx, {"fraud": True}
