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

Two rare multi-event patterns are planted for the correlation windows: card-testing
bursts (3-4 payments over 500 from as many countries on one account within minutes) and
account takeovers (a password-reset ticket, then a large transfer within the hour). A
person who banks with us writes tickets under their ``acct-`` id, so both line up by key.

A share of messages is broken on purpose, each with the ``InvalidEvent`` reason the
decoder must give it.

With ``outcomes=True`` the stream also carries what later happened to each valid event:
a ``schemas.Outcome`` some hours after it (transactions 1-36 h, orders 2-72 h, tickets
10 min-12 h, and only ~80 % of tickets), with a share ``label_noise`` of wrong labels and
~1 % delivered twice; see ``app.simulator.outcomes``. Outcomes are interleaved with the
events by simulated time, and those still due when the ``n`` events are out follow at the
end. With ``drift_at`` the fraud pattern of transactions changes from that event on: the
drivers above stop counting and small mobile-app and digital-goods payments, often from a
desktop, become the risky ones (card-testing bursts and takeovers stay fraud: they are
the correlation rules' patterns). Neither option changes a single event's bytes.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TypeVar

from app.simulator.breakage import break_message, fit_size
from app.simulator.outcomes import Labels, add_noise, observe, outcome_labels
from app.simulator.text import TAKEOVER_SUBJECTS, TICKET_CATEGORIES, URGENCY_WEIGHTS, write_ticket
from schemas import EVENT_MODELS, EventBase, Order, OrderItem, Ticket, Transaction
from schemas.transaction import Device

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_MIX: Mapping[str, float] = MappingProxyType(
    {"transaction": 0.5, "order": 0.3, "ticket": 0.2}
)
ID_PREFIX = {"transaction": "txn", "order": "ord", "ticket": "tkt"}

T = TypeVar("T")


@dataclass(frozen=True)
class SimEvent:
    """One message as produced to Kafka, with what a correct pipeline should make of it."""

    event_type: str
    key: bytes  # partition key (account/customer id), UTF-8; set even for broken messages
    value: bytes  # the message body exactly as produced
    event_id: str | None  # None when the breakage hides it (truncated JSON, array)
    malformed: str | None  # expected ``InvalidEvent.reason``; None for a valid event
    labels: Labels  # ground truth of a valid event (as sent for an outcome); empty if broken
    kind: str = "events"  # "events", or "outcomes" for the outcome of event ``event_id``


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
    rng: random.Random, world: _World, event_id: str, when: datetime, *, drifted: bool = False
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
    if drifted:
        logit = _drifted_logit(channel, category, kind, amount)
    # One draw either way, so drift changes labels only, never the events.
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


def _ticket(
    rng: random.Random, world: _World, event_id: str, when: datetime
) -> tuple[Ticket, Labels]:
    # Account holders write in under their account id: one id per person across tickets
    # and transactions, so a ticket can be correlated with the payments that follow it.
    holder = rng.random() < _HOLDER_SHARE
    customer = rng.choice(world.accounts if holder else world.customers)
    category = rng.choice(TICKET_CATEGORIES)
    urgency = _pick(rng, ("high", "medium", "low"), URGENCY_WEIGHTS[category])
    sentiment = _pick(rng, ("negative", "neutral", "positive"), (30, 45, 25))
    return _write_ticket(rng, customer, event_id, when, category, urgency, sentiment, None)


def _write_ticket(
    rng: random.Random,
    customer: _Party,
    event_id: str,
    when: datetime,
    category: str,
    urgency: str,
    sentiment: str,
    subject: str | None,
) -> tuple[Ticket, Labels]:
    drawn = (category, urgency, sentiment)
    subject, body = write_ticket(rng, *drawn, customer.currency, customer.age_days, when, subject)
    event = Ticket(
        event_id=event_id,
        occurred_at=when,
        customer_id=customer.party_id,
        channel=_pick(rng, ("email", "chat", "phone", "web_form", "social"), (40, 25, 10, 20, 5)),
        subject=subject,
        body=body,
        customer_tier=customer.tier,
        attributes={"previous_tickets": int(rng.expovariate(0.5))},
    )
    return event, {"category": category, "urgency": urgency, "sentiment": sentiment}


# --- planted correlations --------------------------------------------------------------
#
# Two multi-event patterns the shipped correlation rules look for, each rare:
# - card testing: 3-4 large online payments on one account from 3-4 countries within a
#   few minutes, back to back in the stream;
# - account takeover: a password-reset / locked-out ticket from an account holder, then
#   within the hour a large transfer or online payment on that same account.

_BURST_RATE = 0.005  # per transaction drawn: ~6 bursts in 3,000 mixed events
_BURST_FRAUD = 0.9  # most bursts are a stolen card being tested; a few are a busy buyer
_BURST_CATEGORIES = ("electronics", "digital_goods", "jewelry", "gambling", "travel")
_TAKEOVER_RATE = 0.006  # per ticket drawn: ~4 takeovers in 3,000 mixed events
_HOLDER_SHARE = 0.3  # share of tickets written by account holders (under their account id)


def _payment(
    rng: random.Random,
    account: _Party,
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
        merchant=rng.choice(_CATEGORIES[category][3]),
        merchant_category=category,
        channel=channel,
        country=country,
        card_country=account.country,
        device=Device(device_id=device_id, kind=_pick(rng, ("desktop", "unknown"), (2, 1)),
                      is_new=True),
        attributes={"account_age_days": account.age_days},
    )  # fmt: skip


def _burst(
    rng: random.Random, world: _World, seed: int, ids: Iterator[int], when: datetime
) -> list[tuple[EventBase, Labels]]:
    """3-4 payments over 500 on one account from as many countries, 20-90 s apart."""
    account = rng.choice(world.accounts)
    countries = rng.sample([c for c in _ABROAD if c != account.country], k=rng.randint(3, 4))
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


def _takeover_ticket(
    rng: random.Random, world: _World, event_id: str, when: datetime
) -> tuple[Ticket, Labels, _Party]:
    account = rng.choice(world.accounts)
    urgency = _pick(rng, ("high", "medium"), (3, 1))
    sentiment = _pick(rng, ("negative", "neutral"), (2, 1))
    subject = rng.choice(TAKEOVER_SUBJECTS)
    ticket, labels = _write_ticket(
        rng, account, event_id, when, "account", urgency, sentiment, subject
    )
    return ticket, labels, account


def _takeover_payment(
    rng: random.Random, account: _Party, event_id: str, when: datetime
) -> tuple[Transaction, Labels]:
    """The money moved out of a taken-over account: large, by transfer or online."""
    if rng.random() < 0.6:
        category, channel = "money_transfer", "transfer"
    else:
        category, channel = rng.choice(("electronics", "jewelry")), "online"
    amount = round(min(50_000.0, 2000 + rng.lognormvariate(7.5, 0.6)), 2)
    country = account.country if rng.random() < 0.5 else rng.choice(_ABROAD)
    device_id = f"{rng.choice(account.devices)}-new{rng.randrange(10**6):06d}"
    tx = _payment(rng, account, event_id, when, amount=amount, category=category,
                  channel=channel, country=country, device_id=device_id)  # fmt: skip
    return tx, {"fraud": True}


Builder = Callable[[random.Random, _World, str, datetime], tuple[EventBase, Labels]]
_BUILDERS: dict[str, Builder] = {
    "transaction": _transaction,
    "order": _order,
    "ticket": _ticket,
}


# --- the public entry points ---------------------------------------------------------


def _stream(
    seed: int, mix: Mapping[str, float], start: datetime, drift_at: int | None = None
) -> Iterator[tuple[EventBase, Labels]]:
    """Valid events with their truth, in time order; from event ``drift_at`` on (0-based)
    transactions follow the drifted fraud pattern."""
    rng = random.Random(seed)
    world = _build_world(rng, seed)
    types = tuple(mix)
    weights = tuple(mix[t] for t in types)
    takeovers = "transaction" in mix and "ticket" in mix
    due: list[tuple[datetime, int, _Party]] = []  # takeover payments to come (at, n, who)
    ids = itertools.count()
    made = 0  # events yielded so far
    offset_s = 0.0
    last = start
    while True:
        when = start + timedelta(milliseconds=round(offset_s * 1000))
        if due and due[0][0] <= when:
            at, _, account = heapq.heappop(due)
            at = max(at, last)  # a burst may have run past it; stay in time order
            yield _takeover_payment(rng, account, f"txn-{seed}-{next(ids):08d}", at)
            made += 1
            last = at
            continue
        event_type = types[0] if len(types) == 1 else _pick(rng, types, weights)
        if event_type == "transaction" and rng.random() < _BURST_RATE:
            burst = _burst(rng, world, seed, ids, when)
            yield from burst
            made += len(burst)
            when = burst[-1][0].occurred_at
            offset_s = (when - start).total_seconds()
        elif takeovers and event_type == "ticket" and rng.random() < _TAKEOVER_RATE:
            event_id = f"tkt-{seed}-{next(ids):08d}"
            ticket, labels, account = _takeover_ticket(rng, world, event_id, when)
            at = when + timedelta(seconds=rng.uniform(5 * 60, 45 * 60))
            heapq.heappush(due, (at, next(ids), account))
            yield ticket, labels
            made += 1
        else:
            event_id = f"{ID_PREFIX[event_type]}-{seed}-{next(ids):08d}"
            if event_type == "transaction":
                drifted = drift_at is not None and made >= drift_at
                yield _transaction(rng, world, event_id, when, drifted=drifted)
            else:
                yield _BUILDERS[event_type](rng, world, event_id, when)
            made += 1
        last = when
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
    outcomes: bool = False,
    label_noise: float = 0.02,
    drift_at: int | None = None,
) -> Iterator[SimEvent]:
    """Yield ``n`` events as a business app would produce them, in time order.

    About ``malformed_rate`` of them are broken on purpose; each says which
    ``InvalidEvent`` reason the decoder must give it. With ``outcomes`` every valid event
    is followed, later in simulated time, by its outcome (``kind="outcomes"``, labels with
    ``label_noise``), interleaved by time and flushed at the end. From event ``drift_at``
    on (0-based) transactions follow a new fraud pattern. Same arguments, same bytes.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0 <= malformed_rate <= 1:
        raise ValueError(f"malformed_rate must be between 0 and 1, got {malformed_rate}")
    _check_noise_and_drift(label_noise, drift_at)
    start = DEFAULT_START if start is None else start
    _check_args(mix, start)
    run = _Run(
        n=n,
        seed=seed,
        malformed_rate=malformed_rate,
        mix=MappingProxyType({t: w for t, w in mix.items() if w > 0}),
        start=start,
        max_event_bytes=max_event_bytes,
        outcomes=outcomes,
        label_noise=label_noise,
        drift_at=drift_at,
    )
    return _generate(run)


def _check_noise_and_drift(label_noise: float, drift_at: int | None) -> None:
    if not 0 <= label_noise <= 1:
        raise ValueError(
            f"label_noise must be between 0 and 1 (a share of outcomes), got {label_noise}"
        )
    if drift_at is not None and drift_at < 0:
        raise ValueError(f"drift_at must be an event index >= 0 or None, got {drift_at}")


@dataclass(frozen=True)
class _Run:
    """The checked arguments of one ``generate`` call."""

    n: int
    seed: int
    malformed_rate: float
    mix: Mapping[str, float]
    start: datetime
    max_event_bytes: int
    outcomes: bool
    label_noise: float
    drift_at: int | None


def _generate(run: _Run) -> Iterator[SimEvent]:
    stream = _stream(run.seed, run.mix, run.start, run.drift_at)
    # Breakage, outcome timing and label noise each draw from their own generator, so
    # the valid traffic is the same stream whatever the malformed_rate, outcomes and
    # label_noise, and the outcomes are the same whatever the label_noise.
    breaker = random.Random(f"malformed-{run.seed}")
    observer = random.Random(f"outcomes-{run.seed}")
    noise = random.Random(f"label-noise-{run.seed}")
    due: list[tuple[datetime, int, SimEvent]] = []  # outcomes to send: (at, tie-break, msg)
    order = itertools.count()
    for _ in range(run.n):
        event, labels = next(stream)
        event, value = fit_size(event, event.model_dump_json().encode(), run.max_event_bytes)
        while due and due[0][0] <= event.occurred_at:
            yield heapq.heappop(due)[2]
        key = event.partition_key.encode()
        if breaker.random() < run.malformed_rate:
            broken, event_id, reason = break_message(breaker, event, value, run.max_event_bytes)
            yield SimEvent(event.event_type, key, broken, event_id, reason, {})
            continue
        yield SimEvent(event.event_type, key, value, event.event_id, None, labels)
        if run.outcomes:
            sent = add_noise(noise, event.event_type, outcome_labels(event.event_type, labels),
                             run.label_noise)  # fmt: skip
            seen = observe(observer, event, sent)
            if seen is not None:
                message = SimEvent(event.event_type, key, seen.value, event.event_id, None,
                                   seen.labels, "outcomes")  # fmt: skip
                for at in seen.sent_at:
                    heapq.heappush(due, (at, next(order), message))
    while due:
        yield heapq.heappop(due)[2]


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


def labelled_events(
    event_type: str,
    n: int,
    *,
    seed: int = 1,
    drift_at: int | None = None,
    label_noise: float = 0.0,
    start: datetime | None = None,
) -> tuple[list[EventBase], list[dict[str, bool | str]]]:
    """``n`` valid events of one type, in time order, with the labels their outcomes carry.

    The labels are those ``generate(..., mix={event_type: 1}, malformed_rate=0,
    outcomes=True)`` with the same seed would send (noise included; an order's is its
    ``status``), but for every event, confirmed or not. For trainer tests and benchmarks.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_noise_and_drift(label_noise, drift_at)
    start = DEFAULT_START if start is None else start
    _check_args({event_type: 1.0}, start)
    noise = random.Random(f"label-noise-{seed}")
    events: list[EventBase] = []
    labels: list[dict[str, bool | str]] = []
    stream = _stream(seed, {event_type: 1.0}, start, drift_at)
    for _ in range(n):
        event, truth = next(stream)
        events.append(event)
        labels.append(add_noise(noise, event_type, outcome_labels(event_type, truth), label_noise))
    return events, labels
