"""Feature rows: validated events in, named raw features out. Pure: no I/O, no sklearn.

Every column a tabular model reads is named after where its value comes from, so a row
can be computed from the column names alone (a model version stores its columns, and
serving needs nothing else):

- ``amount``, ``device.kind``: a field (dotted: inside an object); numbers and booleans
  (1/0) are numeric columns, strings and enums categorical;
- ``attr.<key>``: a value of the event's free ``attributes`` (numbers numeric, strings
  and booleans categorical);
- ``function(field)``: a derived feature the type's declaration asks for (its
  ``features: derived:`` list): ``log(amount)``, ``hour_of_day(occurred_at)``,
  ``is_night(occurred_at)``, ``day_of_week(...)``, ``length(note)``, ``count(items)``
  (an array's length), ``sum(items.quantity)`` and ``max(items.unit_price)`` (over an
  array of objects), ``differs(country,card_country)`` (1 when the two differ) and
  ``vs_recent_mean(amount)``: the value over this key's recent average of it.

``candidate_columns`` lists what a declared model may learn from (its fields, less the
id, key, time and free text, filtered by its ``include``/``exclude``, plus its derived
features); the trainer keeps the informative ones. ``Rows`` computes them for a batch.

``vs_recent_mean`` compares an event with the same key's earlier events. ``History``
holds that state, bounded; the scorer keeps one per event type and the trainer builds a
fresh one over its data, so serving and training compute the feature the same way.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from operator import attrgetter
from typing import Any

from app.declarations.spec import NIGHT_END_HOUR, DeclaredModel, FieldSpec
from schemas import EventCore

FeatureValue = float | str | None
Row = dict[str, FeatureValue]

ATTRIBUTE_PREFIX = "attr."
RECENT = "vs_recent_mean"
_CALL = re.compile(r"^(?P<function>[a-z_]+)\((?P<args>[^()]*)\)$")
_MISSING = object()


class History:
    """The last ``recent`` values of at most ``max_keys`` keys (accounts, customers).

    Bounded on both axes: each key keeps at most ``recent`` values (oldest dropped) and
    when a new key would exceed ``max_keys`` the least recently seen one is forgotten
    (``evicted`` counts them). A forgotten key simply looks new again: its next event
    has no recent average, which the models were trained to handle (it is how every
    key's first event looks). Values are kept as C doubles in an ``array``: about
    0.36 KB per key with the defaults, key included (measured), so the defaults cap
    the state near 18 MB.
    """

    def __init__(self, *, recent: int = 10, max_keys: int = 50_000) -> None:
        if recent < 1 or max_keys < 1:
            raise ValueError(f"recent and max_keys must be >= 1, got {recent} and {max_keys}")
        self.recent = recent
        self.max_keys = max_keys
        self.evicted = 0
        self._values: OrderedDict[str, array[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def mean(self, key: str) -> float | None:
        """The average of ``key``'s recent values; ``None`` when it has none."""
        values = self._values.get(key)
        if not values:
            return None
        return sum(values) / len(values)

    def add(self, key: str, value: float) -> None:
        """Remember ``value`` as ``key``'s most recent one (``key`` becomes most recent)."""
        values = self._values.get(key)
        if values is None:
            values = self._values[key] = array("d")
            if len(self._values) > self.max_keys:
                self._values.popitem(last=False)
                self.evicted += 1
        else:
            self._values.move_to_end(key)
        values.append(value)
        if len(values) > self.recent:
            del values[0]

    def observe(self, key: str, value: float) -> float | None:
        """``value`` over ``key``'s recent average *before* this value, then remember it."""
        before = self.mean(key)
        self.add(key, value)
        return value / before if before else None


def recent_key(path: str, key: str) -> str:
    """The ``History`` key of a field's values for one partition key."""
    return f"{path}\x00{key}"


def recent_ratios(events: Sequence[EventCore], path: str, history: History) -> list[float | None]:
    """Per event, ``vs_recent_mean(path)``: the value over the same key's recent average
    before it, the history updated as it goes (an earlier event of the batch counts as
    history for a later one, as it would have one batch earlier)."""
    get = _getter(path)
    out: list[float | None] = []
    for event in events:
        number = _finite(get(event))
        if number is None:
            out.append(None)
        else:
            out.append(history.observe(recent_key(path, event.partition_key), number))
    return out


# --- reading values --------------------------------------------------------------------


def _attribute(event: Any, name: str) -> Any:
    """``event.<name>``; a declaration's own name for the id or the time (``submitted_at``)
    is found through the model's field aliases."""
    value = getattr(event, name, _MISSING)
    if value is not _MISSING:
        return value
    fields = getattr(type(event), "model_fields", {})
    for internal, info in fields.items():
        if name in (info.alias, info.validation_alias):
            return getattr(event, internal, None)
    return None


def _getter(path: str) -> Callable[[Any], Any]:
    """A function reading a dotted path from an event (None where it is missing)."""
    fast = attrgetter(path)  # in C: the common case, a field under its own name
    parts = path.split(".")

    def get(event: Any) -> Any:
        try:
            return fast(event)
        except AttributeError:  # a missing object, or the declared name of the id/time
            value = event
            for part in parts:
                if value is None:
                    return None
                value = _attribute(value, part)
            return value

    return get


def _items_getter(path: str) -> Callable[[Any], list[Any] | None]:
    """A function reading a field of every item of an array (``items.quantity``)."""
    head, _, rest = path.partition(".")
    inner = _getter(rest)

    def get(event: Any) -> list[Any] | None:
        items = _attribute(event, head)
        if not isinstance(items, list | tuple):
            return None
        return [inner(item) for item in items]

    return get


def _finite(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _category(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def _when(value: object) -> datetime | None:
    return value.astimezone(UTC) if isinstance(value, datetime) else None


def attribute_features(attributes: Mapping[str, Any]) -> Row:
    """``attr.<key>`` for every attribute: numbers numeric (non-finite = missing), strings
    and booleans categorical (``"true"``/``"false"``)."""
    row: Row = {}
    for key, value in attributes.items():
        row[ATTRIBUTE_PREFIX + key] = _attribute_value(value)
    return row


def _attribute_value(value: object) -> FeatureValue:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _category(value)
    return _finite(value)


# --- columns ---------------------------------------------------------------------------

Extractor = Callable[[Any], FeatureValue]


def _derived(function: str, args: list[str]) -> Extractor:  # noqa: PLR0911 - one per function
    """The extractor of ``function(args)`` (``vs_recent_mean`` is read by ``Rows``)."""
    if function in ("sum", "max"):
        items = _items_getter(args[0])
        combine = sum if function == "sum" else max

        def over(event: Any) -> FeatureValue:
            values = [v for v in (_finite(x) for x in items(event) or []) if v is not None]
            return float(combine(values)) if values else None

        return over
    if function == "count":
        get = _getter(args[0])
        return lambda event: None if (v := get(event)) is None else float(len(v))
    if function == "differs":
        first, second = _getter(args[0]), _getter(args[1])

        def differs(event: Any) -> FeatureValue:
            a, b = first(event), second(event)
            return None if a is None or b is None else float(a != b)

        return differs
    get = _getter(args[0])
    if function == "log":
        return lambda event: None if (n := _finite(get(event))) is None else math.log1p(max(n, 0))
    if function == "hour_of_day":
        return lambda event: None if (t := _when(get(event))) is None else float(t.hour)
    if function == "day_of_week":
        return lambda event: None if (t := _when(get(event))) is None else float(t.weekday())
    if function == "is_night":
        return lambda event: (
            None if (t := _when(get(event))) is None else float(t.hour < NIGHT_END_HOUR)
        )
    if function == "length":
        return lambda event: None if (v := get(event)) is None else float(len(str(v)))
    raise ValueError(f"unknown feature function {function!r} in a column name")


def parse_call(column: str) -> tuple[str, list[str]] | None:
    """``("log", ["amount"])`` for ``log(amount)``; None for a plain column."""
    match = _CALL.match(column)
    if match is None:
        return None
    return match["function"], [a.strip() for a in match["args"].split(",")]


def _extractor(column: str, numeric: bool) -> Extractor:
    if column.startswith(ATTRIBUTE_PREFIX):
        key = column[len(ATTRIBUTE_PREFIX) :]

        def attribute(event: Any) -> FeatureValue:
            attributes = getattr(event, "attributes", None) or {}
            value = attributes.get(key)
            return None if value is None else _attribute_value(value)

        return attribute
    call = parse_call(column)
    if call is not None:
        return _derived(*call)
    get = _getter(column)
    if numeric:

        def number(event: Any) -> FeatureValue:
            value = get(event)
            if type(value) is float:  # the usual case, checked first
                return value if math.isfinite(value) else None
            return _finite(value)

        return number
    return lambda event: _category(get(event))


class Rows:
    """Computes the named columns of a batch of events (``numeric`` as numbers,
    ``categorical`` as text; ``attributes=True`` adds every ``attr.<key>`` too, for
    discovering columns in training). Built once per model version."""

    def __init__(
        self,
        numeric: Sequence[str],
        categorical: Sequence[str] = (),
        *,
        attributes: bool = False,
    ) -> None:
        self.columns = (*numeric, *categorical)
        self.attributes = attributes
        self.recent_fields: tuple[str, ...] = tuple(
            call[1][0]
            for column in numeric
            if (call := parse_call(column)) is not None and call[0] == RECENT
        )
        self._plain: list[tuple[str, Extractor]] = [
            (c, _extractor(c, True)) for c in numeric if not _is_recent(c)
        ]
        self._plain += [(c, _extractor(c, False)) for c in categorical]

    def rows(
        self, events: Sequence[EventCore], recent: Mapping[str, Sequence[float | None]]
    ) -> list[Row]:
        """One row per event; ``recent[field]`` holds the batch's ``vs_recent_mean(field)``
        (``recent_ratios``, computed once per batch whatever the models reading it)."""
        out: list[Row] = []
        plain = self._plain
        ratios = [(f"{RECENT}({f})", recent[f]) for f in self.recent_fields]
        for i, event in enumerate(events):
            row: Row = {name: get(event) for name, get in plain}
            for name, values in ratios:
                row[name] = values[i]
            if self.attributes:
                row.update(attribute_features(getattr(event, "attributes", None) or {}))
            out.append(row)
        return out

    def fresh_rows(self, events: Sequence[EventCore], history: History) -> list[Row]:
        """Rows with ``vs_recent_mean`` from ``history`` (training: a fresh one)."""
        recent = {f: recent_ratios(events, f, history) for f in self.recent_fields}
        return self.rows(events, recent)


def _is_recent(column: str) -> bool:
    return column.startswith(RECENT + "(")


def candidate_columns(model: DeclaredModel) -> tuple[list[str], list[str]]:
    """What ``model`` may learn from, before the trainer selects (attributes aside: they
    are found in the data): its type's fields but the id, the key, the time and free text
    (objects flattened as ``parent.child``, arrays as ``count(name)``), only those its
    ``include`` list names when it has one, less those ``exclude`` names; then its derived
    features. Numeric columns, then categorical ones."""
    spec, declaration = model.spec, model.declaration
    skip = {
        declaration.id_field,
        declaration.key_field,
        declaration.time_field,
        *declaration.text_fields,
    }
    numeric: list[str] = []
    categorical: list[str] = []

    def wanted(path: str) -> bool:
        head = path.split(".", maxsplit=1)[0]
        if spec.include and not any(i in (path, head) for i in spec.include):
            inside = [i for i in spec.include if i.startswith(path + ".")]
            if not inside:
                return False
        return not any(e in (path, head) for e in spec.exclude)

    def visit(path: str, fspec: FieldSpec) -> None:
        if not wanted(path):
            return
        if fspec.type == "object":
            for child in fspec.fields:
                visit(f"{path}.{child.name}", child)
        elif fspec.type == "array":
            numeric.append(f"count({path})")
        elif fspec.type in ("integer", "number", "boolean"):
            numeric.append(path)
        elif fspec.type in ("string", "enum"):
            categorical.append(path)
        # datetime: only through derived features (hour_of_day, is_night, ...)

    for fspec in declaration.fields:
        if fspec.name not in skip:
            visit(fspec.name, fspec)
    numeric += [d.name for d in spec.derived]
    return numeric, categorical


def learns_attributes(model: DeclaredModel) -> bool:
    """Whether ``model`` reads the type's free ``attributes`` (not when its ``include``
    list leaves them out, or ``exclude`` names them)."""
    spec = model.spec
    if not model.declaration.attributes or "attributes" in spec.exclude:
        return False
    return not spec.include or "attributes" in spec.include


def model_rows(model: DeclaredModel, events: Sequence[EventCore], history: History) -> list[Row]:
    """Every candidate column of ``model`` for ``events`` (attributes included), in the
    given order, ``history`` updated: what the trainer selects columns from."""
    numeric, categorical = candidate_columns(model)
    return Rows(numeric, categorical, attributes=learns_attributes(model)).fresh_rows(
        events, history
    )


def text_of(event: EventCore, fields: Collection[str]) -> str:
    """The text a text model reads: its fields' values, one per line, in order."""
    return "\n".join(str(_attribute(event, f) or "") for f in fields)
