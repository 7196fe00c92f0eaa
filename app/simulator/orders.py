"""Shop orders by the customers, with a problem (and its final status) drawn from what a
model can see.

An order is likelier to go wrong when billing and shipping countries differ, on a first
order, for a high total, paid by gift card or crypto, or with a bulk quantity. One of the
builders ``app.simulator.generate`` draws its stream from.
"""

from __future__ import annotations

import math
import random
from datetime import datetime

from app.simulator.outcomes import Labels
from app.simulator.shapes import Order, OrderItem
from app.simulator.world import ABROAD, World, pick, sigmoid


def build_order(
    rng: random.Random, world: World, event_id: str, when: datetime
) -> tuple[Order, Labels]:
    customer = rng.choice(world.customers)
    lines = rng.sample(world.catalogue, k=pick(rng, (1, 2, 3, 4, 5, 6), (40, 25, 15, 10, 6, 4)))
    bulk = rng.random() < 0.05
    items = []
    for n, (sku, price) in enumerate(lines):
        quantity = rng.randint(10, 60) if bulk and n == 0 else pick(rng, (1, 2, 3), (8, 2, 1))
        items.append(OrderItem(sku=sku, quantity=quantity, unit_price=price))
    mismatch = rng.random() < 0.10
    shipping_country = (
        rng.choice([c for c in ABROAD if c != customer.country]) if mismatch else customer.country
    )
    payment = pick(
        rng,
        ("card", "paypal", "bank_transfer", "gift_card", "crypto", "cash_on_delivery"),
        (55, 20, 8, 6, 3, 8),
    )
    first_order = rng.random() < 0.15
    subtotal = sum(item.quantity * item.unit_price for item in items)
    shipping = (0.0 if subtotal >= 50 else 4.99) + (15.0 if mismatch else 0.0)
    total = round(subtotal + shipping, 2)

    size = min(3.0, max(-2.0, math.log(max(total, 1.0)) - 4.5))  # e^4.5 ~ 90: a typical basket
    logit = (
        -4.4
        + 2.2 * mismatch
        + 1.5 * first_order
        + 1.1 * size
        + 2.1 * (payment in ("gift_card", "crypto"))
        + 2.2 * bulk
    )
    problem = rng.random() < sigmoid(logit)
    status = "fulfilled"
    if problem:
        risky = mismatch or payment in ("gift_card", "crypto")
        status = pick(rng, ("chargeback", "returned", "cancelled"), (6 if risky else 2, 4, 3))
    event = Order(
        event_id=event_id,
        occurred_at=when,
        customer_id=customer.party_id,
        items=items,
        total=total,
        currency=customer.currency,
        payment_method=payment,
        billing_country=customer.country,
        shipping_country=shipping_country,
        first_order=first_order,
        attributes={"customer_age_days": customer.age_days},
    )
    return event, {"problem": problem, "status": status}
