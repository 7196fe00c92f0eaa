"""Simulated business traffic with planted, learnable patterns and known ground truth.

Pure and seeded: the same arguments give the same bytes, so a demo, a benchmark and a
test all see the same stream. Each event comes with the labels a later outcome would
carry (fraud, order problem, ticket category/urgency/sentiment), drawn from the event's
own visible features so that a model trained on them has something real to find:

- transactions are likelier fraud abroad, on a new device, at night (0-5 UTC) and when
  the amount is unusually large for the merchant category;
- orders are likelier to go wrong when billing and shipping countries differ, on a first
  order, for a high total, paid by gift card or crypto, or with a bulk quantity;
- tickets are written from per-category templates with typos, and urgency and sentiment
  follow the words put into them.

A share of messages is broken on purpose, each with the ``InvalidEvent`` reason the
decoder must give it.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, TypeVar

from schemas import EVENT_MODELS, EventBase, Order, OrderItem, Ticket, Transaction
from schemas.transaction import Device

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_MIX: Mapping[str, float] = MappingProxyType(
    {"transaction": 0.5, "order": 0.3, "ticket": 0.2}
)
ID_PREFIX = {"transaction": "txn", "order": "ord", "ticket": "tkt"}

Labels = Mapping[str, bool | str]
T = TypeVar("T")


@dataclass(frozen=True)
class SimEvent:
    """One message as produced to Kafka, with what a correct pipeline should make of it."""

    event_type: str
    key: bytes  # partition key (account/customer id), UTF-8; set even for broken messages
    value: bytes  # the message body exactly as produced
    event_id: str | None  # None when the breakage hides it (truncated JSON, array)
    malformed: str | None  # expected ``InvalidEvent.reason``; None for a valid event
    labels: Labels  # ground truth of a valid event; empty for a broken one


# --- the world: parties, places, merchants, catalogue ------------------------------

# Home countries share currencies of similar value, so an amount means roughly the same
# everywhere and "unusually large" stays learnable without currency conversion.
_HOMES: tuple[tuple[str, str, float], ...] = (
    ("US", "USD", 30),
    ("GB", "GBP", 12),
    ("DE", "EUR", 12),
    ("FR", "EUR", 8),
    ("ES", "EUR", 5),
    ("IT", "EUR", 5),
    ("NL", "EUR", 4),
    ("IE", "EUR", 2),
    ("AT", "EUR", 2),
    ("BE", "EUR", 2),
    ("CA", "CAD", 6),
    ("AU", "AUD", 5),
    ("CH", "CHF", 3),
    ("NZ", "NZD", 2),
    ("SG", "SGD", 2),
)
_ABROAD: tuple[str, ...] = (
    "US", "GB", "FR", "ES", "IT", "PT", "GR", "TH", "MX", "TR",
    "AE", "NG", "RO", "ID", "VN", "PH", "BR", "ZA", "MA", "CN",
)  # fmt: skip
_SYMBOL = {"USD": "$", "GBP": "£", "EUR": "€", "CAD": "CA$", "AUD": "A$", "CHF": "CHF ",
           "NZD": "NZ$", "SGD": "S$"}  # fmt: skip

# category: (weight, log-mean, log-sd, merchants)
_CATEGORIES: dict[str, tuple[float, float, float, tuple[str, ...]]] = {
    "grocery": (22, 3.4, 0.6, ("FreshMart", "Green Basket", "Corner Grocer", "DailyFoods")),
    "restaurants": (16, 3.2, 0.6, ("Trattoria Roma", "Burger Barn", "Sushi Go", "Cafe Nord")),
    "fuel": (9, 3.9, 0.35, ("PetroLine", "QuickFuel", "Highway Gas")),
    "clothing": (10, 4.2, 0.6, ("Threadline", "UrbanWear", "Denim & Co")),
    "electronics": (8, 5.2, 0.8, ("VoltHub", "PixelStore", "Circuit City Online")),
    "travel": (6, 5.9, 0.7, ("SkyJet Airlines", "StayWell Hotels", "RailEurope")),
    "digital_goods": (10, 2.8, 0.9, ("AppPlanet", "GameVault", "StreamPlus")),
    "gambling": (3, 4.0, 1.0, ("LuckySpin Casino", "BetKing")),
    "jewelry": (2, 6.0, 0.8, ("Goldsmiths & Sons", "Diamond Lane")),
    "money_transfer": (4, 5.3, 1.0, ("WireFast", "SendHome")),
    "cash_withdrawal": (10, 4.3, 0.6, ("ATM Network",)),
}
_RISKY_CATEGORIES = frozenset({"electronics", "digital_goods", "gambling", "jewelry",
                               "money_transfer"})  # fmt: skip
_CATEGORY_NAMES = tuple(_CATEGORIES)
_CATEGORY_WEIGHTS = tuple(spec[0] for spec in _CATEGORIES.values())

_PRODUCTS = ("wireless headphones", "smart watch", "coffee grinder", "laptop stand",
             "robot vacuum", "e-reader", "phone case", "desk lamp", "gaming mouse",
             "air fryer", "yoga mat", "bluetooth speaker")  # fmt: skip
_PLANS = ("Basic plan", "Plus subscription", "Pro plan", "Family plan", "Business plan")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip


@dataclass(frozen=True)
class _Party:
    party_id: str
    country: str
    currency: str
    age_days: int
    tier: str
    devices: tuple[str, ...]


@dataclass(frozen=True)
class _World:
    accounts: tuple[_Party, ...]
    customers: tuple[_Party, ...]
    catalogue: tuple[tuple[str, float], ...]


def _build_world(rng: random.Random, seed: int) -> _World:
    def party(prefix: str, k: int) -> _Party:
        country, currency, _ = _pick(rng, _HOMES, [h[2] for h in _HOMES])
        devices = tuple(f"dev-{seed}-{prefix}{k:04d}-{d}" for d in range(rng.randint(1, 3)))
        tier = _pick(rng, ("free", "standard", "premium", "enterprise"), (40, 35, 18, 7))
        age = int(rng.expovariate(1 / 700)) + 1
        return _Party(f"{prefix}-{k:05d}", country, currency, age, tier, devices)

    accounts = tuple(party("acct", k) for k in range(400))
    customers = tuple(party("cust", k) for k in range(300))
    catalogue = tuple(
        (f"SKU-{k:05d}", math.floor(min(2000.0, rng.lognormvariate(3.3, 0.9))) + 0.99)
        for k in range(60)
    )
    return _World(accounts, customers, catalogue)


def _pick(rng: random.Random, options: Sequence[T], weights: Sequence[float]) -> T:
    return rng.choices(options, weights=weights, k=1)[0]


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _traffic(hour: int) -> float:
    """Relative event rate by UTC hour: quiet nights, busy days."""
    if hour < 6:
        return 0.35
    if hour < 9 or hour >= 22:
        return 0.75
    return 1.2


# --- one builder per event type ------------------------------------------------------


def _transaction(
    rng: random.Random, world: _World, event_id: str, when: datetime
) -> tuple[Transaction, Labels]:
    account = rng.choice(world.accounts)
    category = _pick(rng, _CATEGORY_NAMES, _CATEGORY_WEIGHTS)
    _, mu, sigma, merchants = _CATEGORIES[category]
    foreign = rng.random() < 0.10
    country = account.country
    if foreign:
        country = rng.choice([c for c in _ABROAD if c != account.country])
    if category == "cash_withdrawal":
        channel = "atm"
    elif category == "money_transfer":
        channel = _pick(rng, ("transfer", "mobile_app"), (3, 1))
    elif category in ("digital_goods", "gambling"):
        channel = _pick(rng, ("online", "mobile_app"), (1, 1))
    elif category in ("fuel", "grocery", "restaurants"):
        channel = _pick(rng, ("card_present", "mobile_app"), (9, 1))
    else:
        channel = _pick(rng, ("card_present", "online", "mobile_app"), (4, 4, 2))

    is_new = rng.random() < 0.12
    if channel in ("card_present", "atm"):
        kind = "pos" if channel == "card_present" else "atm"
        device_id = f"{kind}-{rng.randrange(10**6):06d}"
    else:
        kind = _pick(rng, ("mobile", "desktop", "unknown"), (6, 3, 1))
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
    fraud = rng.random() < _sigmoid(logit)
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


def _order(
    rng: random.Random, world: _World, event_id: str, when: datetime
) -> tuple[Order, Labels]:
    customer = rng.choice(world.customers)
    lines = rng.sample(world.catalogue, k=_pick(rng, (1, 2, 3, 4, 5, 6), (40, 25, 15, 10, 6, 4)))
    bulk = rng.random() < 0.05
    items = []
    for n, (sku, price) in enumerate(lines):
        quantity = rng.randint(10, 60) if bulk and n == 0 else _pick(rng, (1, 2, 3), (8, 2, 1))
        items.append(OrderItem(sku=sku, quantity=quantity, unit_price=price))
    mismatch = rng.random() < 0.10
    shipping_country = (
        rng.choice([c for c in _ABROAD if c != customer.country]) if mismatch else customer.country
    )
    payment = _pick(
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
    problem = rng.random() < _sigmoid(logit)
    status = "fulfilled"
    if problem:
        risky = mismatch or payment in ("gift_card", "crypto")
        status = _pick(rng, ("chargeback", "returned", "cancelled"), (6 if risky else 2, 4, 3))
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


# --- ticket text ---------------------------------------------------------------------

# category: (subjects, body sentences); slots: product, plan, order, amount, invoice, date
_TICKET_TEXT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "billing": (
        ("Charged twice for order {order}", "Question about my invoice",
         "Wrong amount on my bill", "Refund for {order} not received",
         "Unexpected charge of {amount}", "Why was I billed {amount}?",
         "Invoice {invoice} is incorrect", "Payment taken but order shows unpaid",
         "Discount code not applied"),
        ("I was charged {amount} twice for order {order}.",
         "My card statement shows a payment of {amount} that I don't recognise.",
         "The invoice for my {plan} lists the wrong price.",
         "I returned the {product} two weeks ago and still haven't got my refund of {amount}.",
         "My discount code was not applied, so I paid {amount} more than I should have.",
         "You billed me for the {plan} even though I downgraded last month.",
         "Can you send me a corrected version of invoice {invoice}?",
         "My bank shows the payment but order {order} still says awaiting payment.",
         "There is a charge of {amount} from {date} on my account that I can't explain."),
    ),
    "technical": (
        ("App keeps crashing", "My {product} won't connect", "Error when I try to check out",
         "Website not loading", "Sync problem with my {product}", "Bug in the latest update",
         "Can't upload files", "Notifications stopped working",
         "Firmware update failed on {product}"),
        ("The app crashes every time I open the settings page.",
         "My {product} will not pair with my phone over bluetooth anymore.",
         "When I click pay I get an error saying something went wrong.",
         "The website just shows a blank page in every browser I try.",
         "Since the last update my {product} keeps dropping the wifi connection.",
         "I reinstalled the app but the problem is still there.",
         "The firmware update stopped at 60 percent and now the {product} won't turn on.",
         "Uploading anything larger than a few megabytes fails with error 500.",
         "Push notifications stopped arriving after I changed phones."),
    ),
    "account": (
        ("Can't log in", "Password reset email never arrives", "Change the email on my account",
         "Two-factor code not working", "Someone accessed my account",
         "Please delete my account data", "Update my address", "Wrong name on my profile",
         "Account suspended"),
        ("I can't log in even though I'm sure my password is right.",
         "The password reset email never arrives, and it's not in spam either.",
         "I need to change the email address on my account to my new one.",
         "The two-factor code from the authenticator app is always rejected.",
         "I got a login alert from a device I don't own.",
         "Please delete all personal data you hold about me.",
         "My name is spelled wrong on my profile and I can't edit it.",
         "I moved house and need to update my address before my next order.",
         "My account was suspended on {date} without any explanation."),
    ),
    "shipping": (
        ("Where is my order {order}?", "Package not delivered", "Tracking hasn't updated",
         "Wrong item received", "Parcel arrived damaged", "Delivered to the wrong address",
         "Missing item from order {order}", "Change delivery address for {order}",
         "Late delivery"),
        ("My order {order} was supposed to arrive on {date} and it's still not here.",
         "The tracking number hasn't updated for five days.",
         "I received a {product} instead of what I ordered.",
         "The box arrived crushed and the {product} inside is broken.",
         "The courier says it was delivered but nothing came to my door.",
         "Order {order} arrived without the {product}.",
         "Can I still change the delivery address for order {order}?",
         "The parcel was sent to my old address.",
         "The delivery was marked as failed but nobody rang the bell."),
    ),
    "cancellation": (
        ("Cancel my order {order}", "Cancel subscription", "Please stop my {plan}",
         "How do I cancel?", "Cancel before it ships", "Don't want to renew",
         "Ordered by mistake", "End my membership", "Cancel and refund please"),
        ("Please cancel order {order}, I placed it by mistake.",
         "I want to cancel my {plan} at the end of this month.",
         "I can't find the cancel button anywhere in the app.",
         "Please don't renew my {plan}, I no longer need it.",
         "I found the {product} cheaper elsewhere, so please cancel my order.",
         "If order {order} hasn't shipped yet, please cancel it.",
         "I'd like to end my membership and get back the {amount} for the unused months.",
         "Please confirm my subscription is cancelled and I won't be charged again.",
         "I changed my mind about the {product}, can you cancel it?"),
    ),
}  # fmt: skip
_TICKET_CATEGORIES = tuple(_TICKET_TEXT)
_CONTEXT = ("My order number is {order}.", "I'm using the Android app.",
            "I'm on the iPhone app, latest version.", "I bought it on {date}.",
            "I've been a customer for {years}.", "This is on my {plan}.")  # fmt: skip
_URGENCY: dict[str, tuple[str, ...]] = {
    "high": ("This is urgent.", "Please sort this out asap.", "I need this fixed immediately.",
             "I'm locked out and can't do my work.", "I'm still waiting for an answer.",
             "This is the third time I'm contacting you about this.",
             "It's urgent, please reply today."),
    "medium": ("Could you look into this soon?", "I'd appreciate an answer this week.",
               "Please get back to me in the next few days.",
               "It would be good to get this sorted before the weekend."),
    "low": ("No rush on this.", "Whenever you have a moment is fine.", ""),
}  # fmt: skip
_SENTIMENT: dict[str, tuple[str, ...]] = {
    "negative": ("This is ridiculous.", "I'm really frustrated with your service.",
                 "Honestly, this is unacceptable.", "Worst experience I've had with a shop.",
                 "I'm very disappointed.", "I'm fed up with this."),
    "positive": ("Thanks so much for your help!", "I love the {product}, just this one issue.",
                 "You've always been great, so I'm sure this is quick to fix.",
                 "Many thanks in advance, I really appreciate it.",
                 "Great service so far, thank you."),
    "neutral": ("",),
}  # fmt: skip
# Accounts get locked and parcels go missing; cancellations rarely burn.
_URGENCY_WEIGHTS = {
    "billing": (25, 35, 40),
    "technical": (25, 35, 40),
    "account": (45, 30, 25),
    "shipping": (30, 40, 30),
    "cancellation": (10, 35, 55),
}
_GREETINGS = ("", "Hi,", "Hello,", "Dear support team,", "Hi there,")
_SIGN_OFFS = ("", "", "Regards, {name}", "Best, {name}", "{name}")
_NAMES = ("Anna", "Ben", "Carla", "David", "Emre", "Fatima", "Giulia", "Hugo", "Ines", "Jonas")


def _typos(rng: random.Random, text: str, rate: float = 0.05) -> str:
    """Swap or drop one letter in about ``rate`` of the words, like hurried typing."""
    words = text.split(" ")
    for n, word in enumerate(words):
        if len(word) >= 4 and word.isalpha() and rng.random() < rate:
            i = rng.randrange(len(word) - 1)
            if rng.random() < 0.5:
                words[n] = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
            else:
                words[n] = word[:i] + word[i + 1 :]
    return " ".join(words)


def _years(days: int) -> str:
    years = days // 365
    return "less than a year" if years < 1 else f"{years} year{'s' if years > 1 else ''}"


def _ticket(
    rng: random.Random, world: _World, event_id: str, when: datetime
) -> tuple[Ticket, Labels]:
    customer = rng.choice(world.customers)
    category = rng.choice(_TICKET_CATEGORIES)
    urgency = _pick(rng, ("high", "medium", "low"), _URGENCY_WEIGHTS[category])
    sentiment = _pick(rng, ("negative", "neutral", "positive"), (30, 45, 25))
    past = when - timedelta(days=rng.randint(1, 30))
    slots = {
        "product": rng.choice(_PRODUCTS),
        "plan": rng.choice(_PLANS),
        "order": f"#{rng.randint(100_000, 999_999)}",
        "amount": f"{_SYMBOL[customer.currency]}{rng.lognormvariate(3.5, 0.8):.2f}",
        "invoice": f"INV-{rng.randint(10_000, 99_999)}",
        "date": f"{_MONTHS[past.month - 1]} {past.day}",
        "years": _years(customer.age_days),
        "name": rng.choice(_NAMES),
    }
    subjects, sentences = _TICKET_TEXT[category]
    subject = rng.choice(subjects)
    if urgency == "high" and rng.random() < 0.3:
        subject = f"URGENT: {subject}"
    body = rng.sample(sentences, k=_pick(rng, (1, 2, 3), (5, 4, 1)))
    if rng.random() < 0.4:
        body.append(rng.choice(_CONTEXT))
    body.append(rng.choice(_URGENCY[urgency]))
    feeling = rng.choice(_SENTIMENT[sentiment])
    body.insert(0 if sentiment == "negative" and rng.random() < 0.5 else len(body), feeling)
    parts = [rng.choice(_GREETINGS), *body, rng.choice(_SIGN_OFFS)]
    text = " ".join(part.format(**slots) for part in parts if part)
    event = Ticket(
        event_id=event_id,
        occurred_at=when,
        customer_id=customer.party_id,
        channel=_pick(rng, ("email", "chat", "phone", "web_form", "social"), (40, 25, 10, 20, 5)),
        subject=_typos(rng, subject.format(**slots)),
        body=_typos(rng, text),
        customer_tier=customer.tier,
        attributes={"previous_tickets": int(rng.expovariate(0.5))},
    )
    return event, {"category": category, "urgency": urgency, "sentiment": sentiment}


Builder = Callable[[random.Random, _World, str, datetime], tuple[EventBase, Labels]]
_BUILDERS: dict[str, Builder] = {
    "transaction": _transaction,
    "order": _order,
    "ticket": _ticket,
}


# --- broken messages -----------------------------------------------------------------

# kind: expected reason; kinds that need a money field or a long text apply where they fit.
_MALFORMATIONS: dict[str, str] = {
    "truncated_json": "malformed_json",
    "json_array": "not_an_object",
    "missing_field": "validation",
    "wrong_type": "validation",
    "naive_datetime": "validation",
    "negative_amount": "validation",
    "unknown_currency": "validation",
    "oversize_body": "oversize",
}
_KINDS_FOR = {
    "transaction": ("truncated_json", "json_array", "missing_field", "wrong_type",
                    "naive_datetime", "negative_amount", "unknown_currency"),
    "order": ("truncated_json", "json_array", "missing_field", "wrong_type", "naive_datetime",
              "negative_amount", "unknown_currency"),
    "ticket": ("truncated_json", "json_array", "missing_field", "wrong_type", "naive_datetime",
               "oversize_body"),
}  # fmt: skip
_REQUIRED = {
    "transaction": ("amount", "currency", "account_id", "device", "occurred_at"),
    "order": ("items", "total", "customer_id", "currency"),
    "ticket": ("body", "subject", "customer_id", "channel"),
}
_MONEY = {"transaction": "amount", "order": "total"}


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _break(
    rng: random.Random, event: EventBase, value: bytes, max_event_bytes: int
) -> tuple[bytes, str | None, str]:
    """Return (broken value, event id if still readable, expected reason)."""
    event_type = event.event_type
    kind = rng.choice(_KINDS_FOR[event_type])
    doc: dict[str, Any] = json.loads(value)
    if kind == "truncated_json":
        # Any proper prefix of a JSON object lacks its closing brace, so never parses.
        return value[: rng.randrange(1, len(value) - 1)], None, _MALFORMATIONS[kind]
    if kind == "json_array":
        return _dumps([doc]), None, _MALFORMATIONS[kind]
    if kind == "missing_field":
        del doc[rng.choice(_REQUIRED[event_type])]
    elif kind == "wrong_type":
        if event_type == "ticket":
            doc["subject"] = rng.randint(1, 99_999)
        else:
            doc[_MONEY[event_type]] = rng.choice(("abc", "12,50", "free", ""))
    elif kind == "naive_datetime":
        doc["occurred_at"] = event.occurred_at.astimezone(UTC).replace(tzinfo=None).isoformat()
    elif kind == "negative_amount":
        doc[_MONEY[event_type]] = -round(doc[_MONEY[event_type]] + 1, 2)
    elif kind == "unknown_currency":
        doc["currency"] = "XYZ"
    elif kind == "oversize_body":
        filler = " Please see the log below." + " lorem ipsum dolor sit amet" * (
            max_event_bytes // 27 + 1
        )
        doc["body"] += filler
    return _dumps(doc), event.event_id, _MALFORMATIONS[kind]


def _fit(event: EventBase, value: bytes, max_event_bytes: int) -> tuple[EventBase, bytes]:
    """Shorten a ticket body that would not fit the byte limit; valid events must decode."""
    if len(value) <= max_event_bytes:
        return event, value
    if not isinstance(event, Ticket):
        raise ValueError(
            f"a simulated {event.event_type} is {len(value):,} bytes, over max_event_bytes="
            f"{max_event_bytes:,}; raise max_event_bytes"
        )
    keep = len(event.body.encode()) - (len(value) - max_event_bytes) - 4
    if keep < 1:
        raise ValueError(f"max_event_bytes={max_event_bytes:,} is too small for a ticket")
    body = event.body.encode()[:keep].decode(errors="ignore").rstrip() or "."
    fitted = event.model_copy(update={"body": body})
    return fitted, fitted.model_dump_json().encode()


# --- the public entry points ---------------------------------------------------------


def _stream(
    seed: int, mix: Mapping[str, float], start: datetime
) -> Iterator[tuple[EventBase, Labels]]:
    rng = random.Random(seed)
    world = _build_world(rng, seed)
    types = tuple(mix)
    weights = tuple(mix[t] for t in types)
    offset_s = 0.0
    i = 0
    while True:
        when = start + timedelta(milliseconds=round(offset_s * 1000))
        event_type = types[0] if len(types) == 1 else _pick(rng, types, weights)
        event_id = f"{ID_PREFIX[event_type]}-{seed}-{i:08d}"
        event, labels = _BUILDERS[event_type](rng, world, event_id, when)
        yield event, labels
        i += 1
        offset_s += rng.expovariate(_traffic(when.hour) / 60)


def _check_args(mix: Mapping[str, float], start: datetime) -> None:
    unknown = [t for t in mix if t not in EVENT_MODELS]
    if unknown:
        raise ValueError(
            f"unknown event type(s) in mix: {', '.join(unknown)}; "
            f"known types are {', '.join(EVENT_MODELS)}"
        )
    if any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError("mix weights must be non-negative with a positive sum")
    if start.tzinfo is None:
        raise ValueError("start has no timezone: pass e.g. datetime(2026, 1, 1, tzinfo=UTC)")


def generate(
    n: int,
    *,
    seed: int = 7,
    malformed_rate: float = 0.02,
    mix: Mapping[str, float] = DEFAULT_MIX,
    start: datetime | None = None,
    max_event_bytes: int = 65536,
) -> Iterator[SimEvent]:
    """Yield ``n`` messages as a business app would produce them, in time order.

    About ``malformed_rate`` of them are broken on purpose; each says which
    ``InvalidEvent`` reason the decoder must give it. Same arguments, same bytes.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0 <= malformed_rate <= 1:
        raise ValueError(f"malformed_rate must be between 0 and 1, got {malformed_rate}")
    start = DEFAULT_START if start is None else start
    _check_args(mix, start)
    return _generate(
        n=n,
        seed=seed,
        malformed_rate=malformed_rate,
        mix=dict(mix),
        start=start,
        max_event_bytes=max_event_bytes,
    )


def _generate(
    *,
    n: int,
    seed: int,
    malformed_rate: float,
    mix: Mapping[str, float],
    start: datetime,
    max_event_bytes: int,
) -> Iterator[SimEvent]:
    stream = _stream(seed, {t: w for t, w in mix.items() if w > 0}, start)
    # Breakage draws from its own generator so the valid traffic is the same stream
    # whatever the malformed_rate.
    breaker = random.Random(f"malformed-{seed}")
    for _ in range(n):
        event, labels = next(stream)
        event, value = _fit(event, event.model_dump_json().encode(), max_event_bytes)
        key = event.partition_key.encode()
        if breaker.random() < malformed_rate:
            broken, event_id, reason = _break(breaker, event, value, max_event_bytes)
            yield SimEvent(event.event_type, key, broken, event_id, reason, {})
        else:
            yield SimEvent(event.event_type, key, value, event.event_id, None, labels)


def training_set(
    event_type: str, n: int, *, seed: int = 1
) -> tuple[list[EventBase], list[Mapping[str, bool | str]]]:
    """``n`` valid events of one type with their ground-truth labels, for first models."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_args({event_type: 1.0}, DEFAULT_START)
    events: list[EventBase] = []
    labels: list[Mapping[str, bool | str]] = []
    stream = _stream(seed, {event_type: 1.0}, DEFAULT_START)
    for _ in range(n):
        event, truth = next(stream)
        events.append(event)
        labels.append(truth)
    return events, labels
