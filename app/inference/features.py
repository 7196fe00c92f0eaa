"""Feature rows: validated events in, named raw features out. Pure: no I/O, no sklearn.

``feature_rows(event_type, events, history)`` turns a *batch* of events into one dict per
event: named raw features (numbers as ``float``, categories as ``str``, ``None`` where a
value is missing), plus every key of ``event.attributes`` as ``attr.<key>`` (numbers stay
numbers, strings and booleans become categories). The tabular models
(``app/trainer/jobs/fit_tabular.py``) discover their columns from these rows when they
are trained, so a new attribute becomes a feature at the next training without a code change.

Some features compare an event with the same party's earlier events (``amount_vs_recent``:
this amount over the account's recent average). ``History`` holds that state, bounded;
the scorer keeps one per event type and the trainer builds a fresh one over its data, so
serving and training compute the feature the same way.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from app.declarations.spec import DeclaredModel, Derived, FieldSpec, TypeSpec
from schemas import EventCore, Order, Ticket, Transaction

FeatureValue = float | str | None
Row = dict[str, FeatureValue]

ATTRIBUTE_PREFIX = "attr."
NIGHT_END_HOUR = 6  # 0-5 UTC counts as night

# Base features of each event type, numeric ones first; attributes follow, sorted.
TRANSACTION_NUMERIC: tuple[str, ...] = (
    "amount",
    "log_amount",
    "hour_of_day",
    "is_night",
    "country_mismatch",
    "device_is_new",
    "amount_vs_recent",
)
TRANSACTION_CATEGORICAL: tuple[str, ...] = ("channel", "merchant_category", "device_kind")
ORDER_NUMERIC: tuple[str, ...] = (
    "total",
    "log_total",
    "n_lines",
    "total_quantity",
    "max_quantity",
    "log_max_unit_price",
    "billing_ne_shipping",
    "first_order",
    "hour_of_day",
    "is_night",
    "total_vs_recent",
)
ORDER_CATEGORICAL: tuple[str, ...] = ("payment_method",)


class History:
    """The last ``recent`` amounts of at most ``max_keys`` parties (accounts, customers).

    Bounded on both axes: each party keeps at most ``recent`` amounts (oldest dropped) and
    when a new party would exceed ``max_keys`` the least recently seen one is forgotten
    (``evicted`` counts them). A forgotten party simply looks new again: its next event
    has no recent average, which the models were trained to handle (it is how every
    party's first event looks). Amounts are kept as C doubles in an ``array``: about
    0.36 KB per party with the defaults, key included (measured), so the defaults cap
    the state near 18 MB.
    """

    def __init__(self, *, recent: int = 10, max_keys: int = 50_000) -> None:
        if recent < 1 or max_keys < 1:
            raise ValueError(f"recent and max_keys must be >= 1, got {recent} and {max_keys}")
        self.recent = recent
        self.max_keys = max_keys
        self.evicted = 0
        self._amounts: OrderedDict[str, array[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._amounts)

    def __contains__(self, key: object) -> bool:
        return key in self._amounts

    def mean(self, key: str) -> float | None:
        """The average of ``key``'s recent amounts; ``None`` when it has none."""
        amounts = self._amounts.get(key)
        if not amounts:
            return None
        return sum(amounts) / len(amounts)

    def add(self, key: str, amount: float) -> None:
        """Remember ``amount`` as ``key``'s most recent one (``key`` becomes most recent)."""
        amounts = self._amounts.get(key)
        if amounts is None:
            amounts = self._amounts[key] = array("d")
            if len(self._amounts) > self.max_keys:
                self._amounts.popitem(last=False)
                self.evicted += 1
        else:
            self._amounts.move_to_end(key)
        amounts.append(amount)
        if len(amounts) > self.recent:
            del amounts[0]

    def observe(self, key: str, amount: float) -> float | None:
        """``amount`` over ``key``'s recent average *before* this amount, then remember it."""
        before = self.mean(key)
        self.add(key, amount)
        return amount / before if before else None


def _hour(when: datetime) -> int:
    return when.astimezone(UTC).hour


def attribute_features(attributes: Mapping[str, float | int | bool | str]) -> Row:
    """``attr.<key>`` for every attribute: numbers numeric (non-finite = missing), strings
    and booleans categorical (``"true"``/``"false"``)."""
    row: Row = {}
    for key, value in attributes.items():
        name = ATTRIBUTE_PREFIX + key
        if isinstance(value, bool):  # before the number check: bool is an int
            row[name] = "true" if value else "false"
        elif isinstance(value, int | float):
            number = float(value)
            row[name] = number if math.isfinite(number) else None
        else:
            row[name] = value
    return row


def transaction_features(tx: Transaction, history: History) -> Row:
    hour = _hour(tx.occurred_at)
    row: Row = {
        "amount": tx.amount,
        "log_amount": math.log1p(tx.amount),
        "hour_of_day": float(hour),
        "is_night": float(hour < NIGHT_END_HOUR),
        "country_mismatch": float(tx.country != tx.card_country),
        "device_is_new": float(tx.device.is_new),
        "amount_vs_recent": history.observe(tx.account_id, tx.amount),
        "channel": tx.channel,
        "merchant_category": tx.merchant_category,
        "device_kind": tx.device.kind,
    }
    row.update(attribute_features(tx.attributes))
    return row


def order_features(order: Order, history: History) -> Row:
    quantities = [item.quantity for item in order.items]
    hour = _hour(order.occurred_at)
    row: Row = {
        "total": order.total,
        "log_total": math.log1p(order.total),
        "n_lines": float(len(order.items)),
        "total_quantity": float(sum(quantities)),
        "max_quantity": float(max(quantities)),
        "log_max_unit_price": math.log1p(max(item.unit_price for item in order.items)),
        "billing_ne_shipping": float(order.billing_country != order.shipping_country),
        "first_order": float(order.first_order),
        "hour_of_day": float(hour),
        "is_night": float(hour < NIGHT_END_HOUR),
        "total_vs_recent": history.observe(order.customer_id, order.total),
        "payment_method": order.payment_method,
    }
    row.update(attribute_features(order.attributes))
    return row


_BUILDERS: dict[str, tuple[type[EventCore], Callable[..., Row]]] = {
    "transaction": (Transaction, transaction_features),
    "order": (Order, order_features),
}


def feature_rows(event_type: str, events: Sequence[EventCore], history: History) -> list[Row]:
    """One feature row per event, in order; updates ``history`` as it goes.

    Each event's recent-average feature reads ``history`` *before* the event is added, so
    it never sees its own amount, and an earlier event of the same batch counts as
    history for a later one, as it would have one batch earlier.
    """
    declaration: TypeSpec | None = getattr(events[0], "declaration", None) if events else None
    if event_type not in _BUILDERS and declaration is not None:
        return declared_rows(declaration, events, history)
    try:
        model, build = _BUILDERS[event_type]
    except KeyError:
        raise ValueError(
            f"no tabular features for event type {event_type!r}: use one of {sorted(_BUILDERS)}"
        ) from None
    rows: list[Row] = []
    for event in events:
        # Decoded by the type's declaration or by its hand-written model: same fields.
        if event.event_type != model.event_type:
            raise TypeError(f"a {event_type} batch holds a {type(event).__name__}")
        rows.append(build(event, history))
    return rows


# --- declared types ----------------------------------------------------------------------


def declared_rows(spec: TypeSpec, events: Sequence[EventCore], history: History) -> list[Row]:
    """Feature rows of a declared type, straight from its declaration: every field but the
    id, the key, the time and free text (numbers and booleans numeric, enums and strings
    categorical, objects flattened as ``parent.child``, arrays as ``<name>.count``), the
    ``attributes`` as ``attr.<key>``, and the derived features its models ask for, named
    ``function(field)``. Each model picks its own columns from these when it is trained.
    """
    skip = {spec.id_field, spec.key_field, spec.time_field, *spec.text_fields}
    fields = [f for f in spec.fields if f.name not in skip]
    derived = list({d.name: d for m in spec.models for d in m.derived}.values())
    rows: list[Row] = []
    for event in events:
        values = event.model_dump()
        row: Row = {}
        for fspec in fields:
            _field_features(fspec.name, fspec, values.get(fspec.name), row)
        if spec.attributes:
            row.update(attribute_features(values.get("attributes") or {}))
        for d in derived:
            row[d.name] = _derived(d, values.get(d.field), event.partition_key, history)
        rows.append(row)
    return rows


def model_columns(
    model: DeclaredModel, numeric: Sequence[str], categorical: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The columns of a type's feature rows that ``model`` learns from: its own derived
    features (not another model's), and the fields its ``include`` list names (every
    field, and the attributes, without one) less those its ``exclude`` list names."""
    spec = model.spec
    derived = {d.name for d in spec.derived}
    derivable = {d.name for m in model.declaration.models for d in m.derived}

    def wanted(column: str) -> bool:
        if column in derivable:
            return column in derived
        attribute = column.startswith(ATTRIBUTE_PREFIX)
        base = "attributes" if attribute else column.split(".", maxsplit=1)[0]
        if spec.include and base not in spec.include:
            return False
        return base not in spec.exclude

    return [c for c in numeric if wanted(c)], [c for c in categorical if wanted(c)]


def _field_features(name: str, fspec: FieldSpec, value: object, row: Row) -> None:
    if fspec.type in ("integer", "number"):
        row[name] = _finite(value)
    elif fspec.type == "boolean":
        row[name] = None if value is None else float(bool(value))
    elif fspec.type in ("enum", "string"):
        row[name] = None if value is None else str(value)
    elif fspec.type == "object":
        inner = value if isinstance(value, Mapping) else {}
        for child in fspec.fields:
            _field_features(f"{name}.{child.name}", child, inner.get(child.name), row)
    elif fspec.type == "array":
        row[f"{name}.count"] = None if value is None else float(len(value))  # type: ignore[arg-type]
    # datetime: only through derived features (hour_of_day, day_of_week)


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _derived(d: Derived, value: object, key: str, history: History) -> FeatureValue:
    if d.function == "log":
        number = _finite(value)
        return None if number is None else math.log1p(max(number, 0.0))
    if d.function in ("hour_of_day", "day_of_week"):
        if not isinstance(value, datetime):
            return None
        when = value.astimezone(UTC)
        return float(when.hour if d.function == "hour_of_day" else when.weekday())
    if d.function == "length":
        return None if value is None else float(len(str(value)))
    number = _finite(value)  # vs_recent_mean: over this key's recent values of the field
    return None if number is None else history.observe(f"{d.field}\x00{key}", number)


def ticket_text(ticket: Ticket) -> str:
    """The text the ticket models read: subject and body, subject first (it is the summary)."""
    return f"{ticket.subject}\n{ticket.body}"
