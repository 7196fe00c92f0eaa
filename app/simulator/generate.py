"""Simulated business traffic with planted, learnable patterns and known ground truth.

Pure and seeded: the same arguments give the same bytes, so a demo, a benchmark and a
test all see the same stream. Each event comes with the labels a later outcome would
carry (fraud, order problem, ticket category/urgency/sentiment), drawn from the event's
own visible features so that a model trained on them has something real to find:

- transactions are likelier fraud abroad, on a new device, at night (0-5 UTC) and when
  the amount is unusually large for the merchant category (``app.simulator.transactions``);
- orders are likelier to go wrong when billing and shipping countries differ, on a first
  order, for a high total, paid by gift card or crypto, or with a bulk quantity
  (``app.simulator.orders``);
- tickets are written from per-category templates with typos, and urgency and sentiment
  follow the words put into them (``app.simulator.tickets``, words from
  ``app.simulator.text``).

All of them draw their parties, places and merchants from one seeded world
(``app.simulator.world``). Two rare multi-event patterns are planted for the correlation
windows (``app.simulator.patterns``): card-testing bursts (3-4 payments over 500 from as
many countries on one account within minutes) and account takeovers (a password-reset
ticket, then a large transfer within the hour). A person who banks with us writes tickets
under their ``acct-`` id, so both line up by key.

A share of messages is broken on purpose, each with the ``InvalidEvent`` reason the
decoder must give it (``app.simulator.breakage``).

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
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from app.simulator.breakage import break_message, fit_size
from app.simulator.orders import build_order
from app.simulator.outcomes import Labels, add_noise, observe, outcome_labels
from app.simulator.patterns import (
    BURST_RATE,
    TAKEOVER_RATE,
    card_testing_burst,
    takeover_payment,
    takeover_ticket,
)
from app.simulator.shapes import EVENT_MODELS
from app.simulator.tickets import build_ticket
from app.simulator.transactions import build_transaction
from app.simulator.world import Party, World, build_world, pick
from schemas import EventBase

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_MIX: Mapping[str, float] = MappingProxyType(
    {"transaction": 0.5, "order": 0.3, "ticket": 0.2}
)
ID_PREFIX = {"transaction": "txn", "order": "ord", "ticket": "tkt"}


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


def _traffic(hour: int) -> float:
    """Relative event rate by UTC hour: quiet nights, busy days."""
    if hour < 6:
        return 0.35
    if hour < 9 or hour >= 22:
        return 0.75
    return 1.2


# --- the stream of valid events ------------------------------------------------------

Builder = Callable[[random.Random, World, str, datetime], tuple[EventBase, Labels]]
_BUILDERS: dict[str, Builder] = {
    "transaction": build_transaction,
    "order": build_order,
    "ticket": build_ticket,
}


def _stream(
    seed: int, mix: Mapping[str, float], start: datetime, drift_at: int | None = None
) -> Iterator[tuple[EventBase, Labels]]:
    """Valid events with their truth, in time order; from event ``drift_at`` on (0-based)
    transactions follow the drifted fraud pattern."""
    rng = random.Random(seed)
    world = build_world(rng, seed)
    types = tuple(mix)
    weights = tuple(mix[t] for t in types)
    takeovers = "transaction" in mix and "ticket" in mix
    due: list[tuple[datetime, int, Party]] = []  # takeover payments to come (at, n, who)
    ids = itertools.count()
    made = 0  # events yielded so far
    offset_s = 0.0
    last = start
    while True:
        when = start + timedelta(milliseconds=round(offset_s * 1000))
        if due and due[0][0] <= when:
            at, _, account = heapq.heappop(due)
            at = max(at, last)  # a burst may have run past it; stay in time order
            yield takeover_payment(rng, account, f"txn-{seed}-{next(ids):08d}", at)
            made += 1
            last = at
            continue
        event_type = types[0] if len(types) == 1 else pick(rng, types, weights)
        if event_type == "transaction" and rng.random() < BURST_RATE:
            burst = card_testing_burst(rng, world, seed, ids, when)
            yield from burst
            made += len(burst)
            when = burst[-1][0].occurred_at
            offset_s = (when - start).total_seconds()
        elif takeovers and event_type == "ticket" and rng.random() < TAKEOVER_RATE:
            event_id = f"tkt-{seed}-{next(ids):08d}"
            ticket, labels, account = takeover_ticket(rng, world, event_id, when)
            at = when + timedelta(seconds=rng.uniform(5 * 60, 45 * 60))
            heapq.heappush(due, (at, next(ids), account))
            yield ticket, labels
            made += 1
        else:
            event_id = f"{ID_PREFIX[event_type]}-{seed}-{next(ids):08d}"
            if event_type == "transaction":
                drifted = drift_at is not None and made >= drift_at
                yield build_transaction(rng, world, event_id, when, drifted=drifted)
            else:
                yield _BUILDERS[event_type](rng, world, event_id, when)
            made += 1
        last = when
        offset_s += rng.expovariate(_traffic(when.hour) / 60)


# --- the public entry points ---------------------------------------------------------


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


# How many simulator events train a first model of each type the simulator knows (the
# text heads of a ticket share theirs): enough for the planted patterns, minutes at most.
FIRST_MODEL_EVENTS: Mapping[str, int] = MappingProxyType(
    {"transaction": 30_000, "order": 20_000, "ticket": 2_000}
)


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
