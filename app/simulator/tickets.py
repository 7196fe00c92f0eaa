"""Support tickets from customers and account holders, with category, urgency and
sentiment as their truth.

Category, urgency and sentiment are drawn first and the words written from them
(``app.simulator.text``), so a text model finds them in the subject and body. Account
holders write under their ``acct-`` id, so a ticket lines up by key with their payments
(the takeover pattern in ``app.simulator.patterns`` writes its tickets with
``ticket_from_labels``). One of the builders ``app.simulator.generate`` draws its stream
from.
"""

from __future__ import annotations

import random
from datetime import datetime

from app.simulator.outcomes import Labels
from app.simulator.shapes import Ticket
from app.simulator.text import TICKET_CATEGORIES, URGENCY_WEIGHTS, write_ticket
from app.simulator.world import Party, World, pick

_HOLDER_SHARE = 0.3  # share of tickets written by account holders (under their account id)


def build_ticket(
    rng: random.Random, world: World, event_id: str, when: datetime
) -> tuple[Ticket, Labels]:
    # Account holders write in under their account id: one id per person across tickets
    # and transactions, so a ticket can be correlated with the payments that follow it.
    holder = rng.random() < _HOLDER_SHARE
    customer = rng.choice(world.accounts if holder else world.customers)
    category = rng.choice(TICKET_CATEGORIES)
    urgency = pick(rng, ("high", "medium", "low"), URGENCY_WEIGHTS[category])
    sentiment = pick(rng, ("negative", "neutral", "positive"), (30, 45, 25))
    return ticket_from_labels(rng, customer, event_id, when, category, urgency, sentiment, None)


def ticket_from_labels(
    rng: random.Random,
    customer: Party,
    event_id: str,
    when: datetime,
    category: str,
    urgency: str,
    sentiment: str,
    subject: str | None,
) -> tuple[Ticket, Labels]:
    """The ticket of already drawn labels; ``subject`` None lets the category pick one."""
    drawn = (category, urgency, sentiment)
    subject, body = write_ticket(rng, *drawn, customer.currency, customer.age_days, when, subject)
    event = Ticket(
        event_id=event_id,
        occurred_at=when,
        customer_id=customer.party_id,
        channel=pick(rng, ("email", "chat", "phone", "web_form", "social"), (40, 25, 10, 20, 5)),
        subject=subject,
        body=body,
        customer_tier=customer.tier,
        attributes={"previous_tickets": int(rng.expovariate(0.5))},
    )
    return event, {"category": category, "urgency": urgency, "sentiment": sentiment}
