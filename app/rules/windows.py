"""Correlation windows: bounded, event-time aggregates per key that rules read as fields.

A rule file may declare ``windows:`` next to its rules; each window keeps, per key, the
events of one type (``from``, default: the ruleset's own type) that pass a ``where``
filter within the last ``within`` of event time, and reduces them to one number that the
ruleset's conditions read as ``windows.<name>``::

    windows:
      - name: countries_over_500_10m
        within: 10m                     # 30s, 10m, 1h, 2d; at most 7d
        where: {field: amount, gt: 500}
        distinct: country               # or count: true | sum: <path> | max: <path>
      - name: password_resets_1h
        within: 1h
        from: ticket                    # tickets feed it, transactions read it
        where: {any: [{field: subject, matches: "(?i)password|locked out"},
                      {field: scores.category, eq: account}]}
        count: true

Why here and not in durable_rules: durable's joins keep state that cannot be deleted
safely at volume (``../shared/STACK-NOTES.md``), so the state lives in Arbiter and
durable only ever sees single-message rules over plain fields.

**Keys.** Windows are keyed by the event's partition key (``event.partition_key``:
``account_id`` for transactions, ``customer_id`` for tickets and orders). A window fed by
another event type (``from: ticket`` on the transaction ruleset) therefore assumes the
business uses the same id for the customer in both streams.

**Event time.** Entries are kept by ``occurred_at``. A read at time ``t`` counts the
entries in ``(t - within, t]``: an entry exactly ``within`` old no longer counts. Late
and out-of-order events are inserted at their place in time. The watermark (the largest
``occurred_at`` seen) drives expiry; ``WindowStore`` sweeps by itself every so many
observations, so memory stays bounded without the caller's help. One event stamped far
in the future moves the watermark and expires everything before it, so ``occurred_at``
must be sane at the edge.

**Restart.** The service rebuilds state by replaying the ledger's events of the last
``WindowStore.horizon_s`` seconds through ``observe_and_read`` (or ``replay``, which
skips the reads). Counting is not idempotent: the replay must feed each event once (the
ledger's unique ``event_id`` guarantees that), and after ``reconfigure`` only the new
windows may be seeded (``replay(..., only=new_specs)``), or the kept ones double-count.

Pure: no I/O, no durable_rules; ``parse_windows`` is called by ``app.rules.loader``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import operator
import re
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias

from app.rules.spec import SCORES_PREFIX, WINDOWS_PREFIX, RuleProblem, Scalar, SourceRef

__all__ = [
    "AGGREGATES",
    "MAX_WITHIN_S",
    "WHERE_OPERATORS",
    "Aggregate",
    "Where",
    "WhereAll",
    "WhereAny",
    "WhereNot",
    "WhereTest",
    "WindowSpec",
    "WindowStore",
    "duplicate_windows",
    "parse_windows",
    "where_holds",
    "window_field_types",
]

Aggregate: TypeAlias = Literal["count", "sum", "distinct", "max"]
AGGREGATES: tuple[Aggregate, ...] = ("count", "sum", "distinct", "max")
WhereOp: TypeAlias = Literal[
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "missing", "matches"
]
WHERE_OPERATORS: tuple[WhereOp, ...] = (
    *("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in"),
    *("exists", "missing", "matches"),
)
MAX_WITHIN_S = 7 * 86_400

_ORDERING = frozenset({"gt", "gte", "lt", "lte"})
_LISTS = frozenset({"in", "not_in"})
_PRESENCE = frozenset({"exists", "missing"})
_MAX_PATTERN = 500


# --- the spec --------------------------------------------------------------------------


@dataclass(frozen=True)
class WhereTest:
    """``field <op> value``; ``value`` is a tuple for in/not_in, the regex text for
    ``matches`` and None for exists/missing."""

    path: str
    op: WhereOp
    value: Scalar | tuple[Scalar, ...] | None


@dataclass(frozen=True)
class WhereAll:
    """True when every condition is true."""

    conditions: tuple[Where, ...]


@dataclass(frozen=True)
class WhereAny:
    """True when at least one condition is true."""

    conditions: tuple[Where, ...]


@dataclass(frozen=True)
class WhereNot:
    """True when the condition is false; a test on a missing field stays false under
    ``not`` too, as in the rules (see ``app.rules.compile``)."""

    condition: Where


Where: TypeAlias = WhereTest | WhereAll | WhereAny | WhereNot


def _canonical(where: Where) -> Any:
    if isinstance(where, WhereTest):
        value = list(where.value) if isinstance(where.value, tuple) else where.value
        return {"field": where.path, where.op: True if where.value is None else value}
    if isinstance(where, WhereNot):
        return {"not": _canonical(where.condition)}
    group = "all" if isinstance(where, WhereAll) else "any"
    return {group: [_canonical(c) for c in where.conditions]}


@dataclass(frozen=True)
class WindowSpec:
    """One declared window. ``source_type`` feeds it, ``target_type``'s rules read it as
    ``windows.<name>``; ``of`` is the path summed/maxed/counted distinct (None for count)."""

    name: str
    within_s: float
    source_type: str
    target_type: str
    where: Where | None
    aggregate: Aggregate
    of: str | None
    source: SourceRef

    @property
    def fingerprint(self) -> str:
        """Short sha256 of the meaning (not of the file or line): state is kept across a
        reload exactly when it is unchanged. Name and target are part of it, so a renamed
        window starts empty."""
        content = {
            "name": self.name,
            "within_s": self.within_s,
            "from": self.source_type,
            "to": self.target_type,
            "where": None if self.where is None else _canonical(self.where),
            "aggregate": self.aggregate,
            "of": self.of,
        }
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def window_field_types(specs: Iterable[WindowSpec], target_type: str) -> dict[str, str]:
    """The fields ``target_type``'s rules may read: ``{"windows.<name>": "number"}``."""
    return {f"{WINDOWS_PREFIX}{s.name}": "number" for s in specs if s.target_type == target_type}


# --- evaluating `where` (three-valued, like the rules) --------------------------------

_Pred: TypeAlias = Callable[[Mapping[str, Any]], "bool | None"]
_Getter: TypeAlias = Callable[[Mapping[str, Any]], Any]


def _getter(path: str) -> _Getter:
    """Reads a dotted path from a nested fact; list items by index; None when absent."""
    if "." not in path:
        return lambda fact: fact.get(path)
    steps = tuple((p, int(p) if p.isdigit() else None) for p in path.split("."))

    def get(fact: Mapping[str, Any]) -> Any:
        current: Any = fact
        for name, index in steps:
            if isinstance(current, Mapping):
                current = current.get(name)
            elif index is not None and isinstance(current, list | tuple):
                current = current[index] if index < len(current) else None
            else:
                return None
            if current is None:
                return None
        return current

    return get


def _kind(value: Scalar) -> str:
    """number / string / boolean; bool first, because a bool is an int."""
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, int | float) else "string"


def _as_number(value: Any) -> float | None:
    """A finite float, or None; numeric strings count (JSON-dumped decimals)."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _as_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


_COERCE: dict[str, Callable[[Any], Any]] = {
    "number": _as_number,
    "string": _as_text,
    "boolean": _as_bool,
}
_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _compile_test(test: WhereTest) -> _Pred:
    get = _getter(test.path)
    if test.op == "exists":
        return lambda fact: get(fact) is not None
    if test.op == "missing":
        return lambda fact: get(fact) is None
    if test.op == "matches":
        regex = re.compile(str(test.value))

        def matches(fact: Mapping[str, Any]) -> bool | None:
            text = get(fact)
            return regex.search(text) is not None if isinstance(text, str) else None

        return matches
    values = test.value if isinstance(test.value, tuple) else (test.value,)
    coerce = _COERCE[_kind(values[0])]  # type: ignore[arg-type]
    wanted = [coerce(v) for v in values]
    if test.op in _LISTS:
        allowed = frozenset(wanted)
        inside = test.op == "in"

        def member(fact: Mapping[str, Any]) -> bool | None:
            got = coerce(get(fact))
            return None if got is None else (got in allowed) is inside

        return member
    cmp, operand = _CMP[test.op], wanted[0]

    def compare(fact: Mapping[str, Any]) -> bool | None:
        got = coerce(get(fact))
        return None if got is None else cmp(got, operand)

    return compare


def _compile(where: Where) -> _Pred:
    if isinstance(where, WhereTest):
        return _compile_test(where)
    if isinstance(where, WhereNot):
        inner = _compile(where.condition)

        def negated(fact: Mapping[str, Any]) -> bool | None:
            result = inner(fact)
            return None if result is None else not result

        return negated
    parts = tuple(_compile(c) for c in where.conditions)
    if len(parts) == 1:
        return parts[0]
    # all: any False wins, else unknown wins; any: any True wins, else unknown wins.
    decisive = not isinstance(where, WhereAll)

    def group(fact: Mapping[str, Any]) -> bool | None:
        unknown = False
        for part in parts:
            result = part(fact)
            if result is decisive:
                return decisive
            if result is None:
                unknown = True
        return None if unknown else not decisive

    return group


def where_holds(where: Where | None, fact: Mapping[str, Any]) -> bool:
    """Whether ``where`` holds on a nested fact (``{**event_json, "scores": {...}}``).

    A comparison on a missing field, or on a value of the wrong kind, is unknown: it never
    holds, not even under ``not`` (as in the rules). Convenience for one-off checks; the
    store compiles each ``where`` once.
    """
    return where is None or _compile(where)(fact) is True


# --- the store -------------------------------------------------------------------------

_SKIP = object()
_MIN_SWEEP_EVERY = 10_000


class _Series:
    """One key's entries in one window, sorted by time (µs since the epoch)."""

    __slots__ = ("times", "values")

    def __init__(self, aggregate: Aggregate) -> None:
        self.times: array[int] = array("q")
        self.values: array[float] | list[Any] | None = (
            None if aggregate == "count" else [] if aggregate == "distinct" else array("d")
        )


class _Window:
    """A spec with its compiled filter and extractor, and a slot id stable across reloads."""

    __slots__ = ("aggregate", "extract", "holds", "slot", "spec", "within_us")

    def __init__(self, spec: WindowSpec, slot: int) -> None:
        self.spec = spec
        self.slot = slot
        self.aggregate = spec.aggregate
        self.within_us = round(spec.within_s * 1_000_000)
        self.holds = None if spec.where is None else _compile(spec.where)
        self.extract = _extractor(spec)


def _extractor(spec: WindowSpec) -> Callable[[Mapping[str, Any]], Any]:
    """What one event adds: None for count, a number for sum/max, a scalar for distinct;
    ``_SKIP`` when the field is missing or of the wrong kind (the event does not count)."""
    if spec.aggregate == "count" or spec.of is None:
        return lambda fact: None
    get = _getter(spec.of)
    if spec.aggregate == "distinct":

        def scalar(fact: Mapping[str, Any]) -> Any:
            value = get(fact)
            return value if isinstance(value, str | int | float) else _SKIP

        return scalar

    def number(fact: Mapping[str, Any]) -> Any:
        value = _as_number(get(fact))
        return _SKIP if value is None else value

    return number


def _micros(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError(f"time {at.isoformat()} has no timezone — pass occurred_at as is")
    # Exact: a float timestamp near 2e9 s resolves far below half a microsecond.
    return round(at.timestamp() * 1_000_000)


def _read(series: _Series | None, aggregate: Aggregate, t: int, within_us: int) -> float:
    if series is None:
        return 0.0
    times = series.times
    hi = bisect_right(times, t)
    lo = bisect_right(times, t - within_us, 0, hi)
    if aggregate == "count" or lo == hi:
        return float(hi - lo)
    values = series.values
    assert values is not None
    if aggregate == "sum":
        return float(math.fsum(values[lo:hi]))
    if aggregate == "max":
        return float(max(values[lo:hi]))
    return float(len(set(values[lo:hi])))


class WindowStore:
    """State for a set of WindowSpecs. Pure (no I/O); not thread-safe (used from the one
    decide worker thread).

    Bounds: each window keeps at most ``max_entries_per_key`` entries per key (the oldest
    are dropped and counted as ``truncated_entries``); at most ``max_keys`` keys are held
    over all windows (the least recently updated key is evicted whole and counted as
    ``evicted_keys``). Expired entries are swept every ``max(10_000, keys)`` observations
    with the watermark (largest ``occurred_at`` seen) minus ``allowed_lateness_s``, so an
    event up to that late still reads the entries before it.
    """

    def __init__(
        self,
        specs: Sequence[WindowSpec],
        *,
        max_keys: int = 200_000,
        max_entries_per_key: int = 1_000,
        allowed_lateness_s: float = 60.0,
    ) -> None:
        if max_keys < 1 or max_entries_per_key < 1 or allowed_lateness_s < 0:
            raise ValueError(
                "max_keys and max_entries_per_key must be >= 1 and allowed_lateness_s >= 0"
            )
        self._max_keys = max_keys
        self._max_entries = max_entries_per_key
        self._lateness_us = round(allowed_lateness_s * 1_000_000)
        self._keys: OrderedDict[str, dict[int, _Series]] = OrderedDict()
        self._windows: list[_Window] = []
        self._by_source: dict[str, tuple[_Window, ...]] = {}
        self._by_target: dict[str, tuple[_Window, ...]] = {}
        self._next_slot = 0
        self._watermark: int | None = None
        self._since_sweep = 0
        self._sweep_every = _MIN_SWEEP_EVERY
        self._entries = 0
        self._evicted_keys = 0
        self._truncated = 0
        self.specs: tuple[WindowSpec, ...] = ()
        self.reconfigure(specs)

    # -- configuration

    def reconfigure(self, specs: Sequence[WindowSpec]) -> list[WindowSpec]:
        """Switch to ``specs``: a window whose fingerprint is unchanged keeps its state,
        removed ones are dropped. Returns the new windows (empty; seed them with
        ``replay(events, only=...)``). Raises ``ValueError`` on a duplicate name per
        target type (the loader reports those first)."""
        seen: set[tuple[str, str]] = set()
        for spec in specs:
            ident = (spec.target_type, spec.name)
            if ident in seen:
                raise ValueError(f"window '{spec.name}' appears twice for {spec.target_type}")
            seen.add(ident)
        current = {w.spec.fingerprint: w for w in self._windows}
        windows: list[_Window] = []
        added: list[WindowSpec] = []
        for spec in specs:
            kept = current.pop(spec.fingerprint, None)
            if kept is None:
                kept = _Window(spec, self._next_slot)
                self._next_slot += 1
                added.append(spec)
            else:
                kept.spec = spec  # same meaning; the file/line may have moved
            windows.append(kept)
        if current:
            self._drop_slots({w.slot for w in current.values()})
        self._windows = windows
        self.specs = tuple(w.spec for w in windows)
        self._by_source = _group(windows, lambda w: w.spec.source_type)
        self._by_target = _group(windows, lambda w: w.spec.target_type)
        return added

    def _drop_slots(self, slots: set[int]) -> None:
        empty: list[str] = []
        for key, state in self._keys.items():
            for slot in slots:
                series = state.pop(slot, None)
                if series is not None:
                    self._entries -= len(series.times)
            if not state:
                empty.append(key)
        for key in empty:
            del self._keys[key]

    @property
    def horizon_s(self) -> float:
        """How far back (event time) a rebuild must replay: the longest ``within``."""
        return max((w.spec.within_s for w in self._windows), default=0.0)

    # -- the hot path

    def observe_and_read(
        self, event_type: str, key: str, at: datetime, fact: Mapping[str, Any]
    ) -> dict[str, float]:
        """Add this event to every window it feeds (``source_type == event_type`` and
        ``where`` holds on ``fact``), then return ``{name: value}`` of every window
        ``event_type``'s rules read, for ``key`` at ``at`` — the event itself included.

        ``fact`` is ``{**event.model_dump(mode="json"), "scores": {...}}``; ``at`` is the
        event's ``occurred_at``; ``key`` its ``partition_key``. count → entries, sum →
        sum, distinct → distinct values, max → max (0 when empty).
        """
        t = _micros(at)
        self._observe(event_type, key, t, fact, self._by_source.get(event_type))
        targets = self._by_target.get(event_type)
        if not targets:
            return {}
        state = self._keys.get(key)
        if state is None:
            return {w.spec.name: 0.0 for w in targets}
        return {w.spec.name: _read(state.get(w.slot), w.aggregate, t, w.within_us) for w in targets}

    def replay(
        self,
        events: Iterable[tuple[str, str, datetime, Mapping[str, Any]]],
        *,
        only: Iterable[WindowSpec] | None = None,
    ) -> int:
        """Feed stored ``(event_type, key, occurred_at, fact)`` events without reading,
        to rebuild state after a restart (all windows) or to seed the windows that
        ``reconfigure`` returned (``only=``). Feed each event once. Returns the count."""
        sources = self._by_source
        if only is not None:
            wanted = {s.fingerprint for s in only}
            sources = _group(
                [w for w in self._windows if w.spec.fingerprint in wanted],
                lambda w: w.spec.source_type,
            )
        fed = 0
        for event_type, key, at, fact in events:
            self._observe(event_type, key, _micros(at), fact, sources.get(event_type))
            fed += 1
        return fed

    def _observe(
        self,
        event_type: str,
        key: str,
        t: int,
        fact: Mapping[str, Any],
        sources: tuple[_Window, ...] | None,
    ) -> None:
        if self._watermark is None or t > self._watermark:
            self._watermark = t
        if sources:
            state: dict[int, _Series] | None = None
            for window in sources:
                if window.holds is not None and window.holds(fact) is not True:
                    continue
                value = window.extract(fact)
                if value is _SKIP:
                    continue
                if state is None:
                    state = self._touch(key)
                series = state.get(window.slot)
                if series is None:
                    series = state[window.slot] = _Series(window.aggregate)
                self._add(window, series, t, value)
        self._since_sweep += 1
        if self._since_sweep >= self._sweep_every:
            self._sweep(self._watermark - self._lateness_us)

    def _touch(self, key: str) -> dict[int, _Series]:
        state = self._keys.get(key)
        if state is not None:
            self._keys.move_to_end(key)
            return state
        state = self._keys[key] = {}
        if len(self._keys) > self._max_keys:
            _, evicted = self._keys.popitem(last=False)
            self._entries -= sum(len(s.times) for s in evicted.values())
            self._evicted_keys += 1
        return state

    def _add(self, window: _Window, series: _Series, t: int, value: Any) -> None:
        times, values = series.times, series.values
        assert self._watermark is not None
        # Trim what no read can reach any more before inserting, so a very late event
        # still counts in its own read (the next sweep drops it).
        cutoff = self._watermark - self._lateness_us - window.within_us
        if times and times[0] <= cutoff:
            self._drop_front(series, bisect_right(times, cutoff))
        if not times or t >= times[-1]:
            times.append(t)
            if values is not None:
                values.append(value)
        else:
            index = bisect_right(times, t)
            times.insert(index, t)
            if values is not None:
                values.insert(index, value)
        self._entries += 1
        over = len(times) - self._max_entries
        if over > 0:
            self._drop_front(series, over)
            self._truncated += over

    def _drop_front(self, series: _Series, count: int) -> None:
        del series.times[:count]
        if series.values is not None:
            del series.values[:count]
        self._entries -= count

    # -- expiry and stats

    def expire(self, now: datetime) -> int:
        """Drop every entry at or before ``now - within`` (reads at ``now`` or later can
        no longer see it) and keys left empty; returns how many entries were dropped."""
        return self._sweep(_micros(now))

    def _sweep(self, now: int) -> int:
        self._since_sweep = 0
        within = {w.slot: w.within_us for w in self._windows}
        before = self._entries
        empty: list[str] = []
        for key, state in self._keys.items():
            for slot, series in list(state.items()):
                times = series.times
                cutoff = now - within[slot]
                if times[0] <= cutoff:
                    self._drop_front(series, bisect_right(times, cutoff))
                    if not times:
                        del state[slot]
            if not state:
                empty.append(key)
        for key in empty:
            del self._keys[key]
        # A sweep visits every key: spacing sweeps by the key count keeps it O(1) per event.
        self._sweep_every = max(_MIN_SWEEP_EVERY, len(self._keys))
        return before - self._entries

    @property
    def stats(self) -> dict[str, int]:
        """keys held, entries held, keys evicted by ``max_keys``, entries dropped by
        ``max_entries_per_key`` (the last two since the store was built)."""
        return {
            "keys": len(self._keys),
            "entries": self._entries,
            "evicted_keys": self._evicted_keys,
            "truncated_entries": self._truncated,
        }


def _group(
    windows: Sequence[_Window], by: Callable[[_Window], str]
) -> dict[str, tuple[_Window, ...]]:
    out: dict[str, list[_Window]] = {}
    for window in windows:
        out.setdefault(by(window), []).append(window)
    return {k: tuple(v) for k, v in out.items()}


# --- parsing ---------------------------------------------------------------------------

WINDOW_KEYS = ("name", "within", "from", "where", *AGGREGATES)
_GROUPS = ("all", "any", "not")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DURATION_RE = re.compile(r"^(\d{1,7})\s*(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
# Field kind -> the kind of operand it needs; "any" takes every scalar.
_EXPECTED = {"number": "number", "string": "string", "boolean": "boolean"}


def _line(value: Any, fallback: int | None) -> int | None:
    """The line the loader's YAML reader put on a mapping (duck-typed, so plain dicts
    work too and this module needs no import of the loader at load time)."""
    line = getattr(value, "line", None)
    return line if isinstance(line, int) else fallback


def _key_line(mapping: Any, key: str) -> int | None:
    lines = getattr(mapping, "key_lines", None)
    found = lines.get(key) if isinstance(lines, dict) else None
    return found if isinstance(found, int) else _line(mapping, None)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else ""


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string '{value}'"
    if isinstance(value, int | float):
        return f"the number {value}"
    if value is None:
        return "nothing (null)"
    return "a list" if isinstance(value, list) else "a mapping"


class _Bad(Exception):
    """Raised after a problem is recorded, to abandon the window being read."""


class _Parser:
    def __init__(
        self,
        file: str,
        event_type: str,
        field_types: Mapping[str, Mapping[str, str]],
        score_types: Mapping[str, Mapping[str, str]],
    ) -> None:
        # Imported here: the loader imports this module, so a top-level import would cycle.
        from app.rules.loader import field_kind

        self._field_kind = field_kind
        self.file = file
        self.event_type = event_type
        self.field_types = field_types
        self.score_types = score_types
        self.problems: list[RuleProblem] = []
        self.label = ""

    def problem(self, line: int | None, message: str) -> None:
        self.problems.append(RuleProblem(self.file, line, None, f"{self.label}{message}"))

    def fail(self, line: int | None, message: str) -> _Bad:
        self.problem(line, message)
        return _Bad()

    def window(self, raw: Any, index: int, list_line: int | None) -> WindowSpec | None:
        line = _line(raw, list_line)
        self.label = f"window #{index + 1}: "
        if not isinstance(raw, Mapping):
            self.problem(
                line,
                f"is {_describe(raw)}, not a mapping — write it as '- name: ...' with "
                "'within' and an aggregate indented below",
            )
            return None
        before = len(self.problems)
        name = raw.get("name")
        if "name" not in raw:
            self.problem(line, "has no 'name' — add e.g. 'name: countries_over_500_10m'")
        elif not isinstance(name, str) or not _NAME_RE.match(name):
            fix = re.sub(r"[^a-z0-9_]+", "_", str(name).lower()).strip("_") or "my_window"
            if not fix[0].isalpha():
                fix = f"w_{fix}"
            self.problem(
                _key_line(raw, "name"),
                f"the name {name!r} is not allowed — use lower-case letters, digits and "
                f"'_', starting with a letter (at most 63), e.g. '{fix[:63]}'",
            )
        else:
            self.label = f"window '{name}': "
        for key, key_line in getattr(raw, "duplicate_keys", ()):
            self.problem(key_line, f"key '{key}' appears twice — keep one")
        for key in raw:
            if key not in WINDOW_KEYS:
                self.problem(
                    _key_line(raw, str(key)),
                    f"unknown key '{key}'{_did_you_mean(str(key), WINDOW_KEYS)} "
                    f"(allowed: {', '.join(WINDOW_KEYS)})",
                )
        within = self.within(raw, line)
        source_type = self.source_type(raw)
        where: Where | None = None
        aggregate: tuple[Aggregate, str | None] | None = None
        if source_type is not None and "where" in raw:
            where = self.attempt(
                lambda: self.condition(source_type, raw["where"], _key_line(raw, "where"))
            )
        aggregate = self.attempt(lambda: self.aggregate(source_type, raw, line))
        if len(self.problems) != before or within is None or source_type is None:
            return None
        assert aggregate is not None
        assert isinstance(name, str)
        return WindowSpec(
            name=name,
            within_s=within,
            source_type=source_type,
            target_type=self.event_type,
            where=where,
            aggregate=aggregate[0],
            of=aggregate[1],
            source=SourceRef(self.file, line),
        )

    def attempt(self, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except _Bad:
            return None

    def within(self, raw: Mapping[str, Any], line: int | None) -> float | None:
        if "within" not in raw:
            self.problem(line, "has no 'within' — add how far back it looks, e.g. 'within: 10m'")
            return None
        value = raw["within"]
        match = _DURATION_RE.match(value.strip()) if isinstance(value, str) else None
        seconds = int(match[1]) * _UNIT_S[match[2]] if match else 0
        if match and 0 < seconds <= MAX_WITHIN_S:
            return float(seconds)
        fix = "write a number and s/m/h/d, e.g. '30s', '10m', '1h' or '2d' (at most 7d)"
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            fix = f"write '{value}s' for seconds, or minutes/hours like '10m', '1h' (at most 7d)"
        elif match:
            fix = "write a duration above zero and at most 7d"
        self.problem(
            _key_line(raw, "within"), f"'within: {value}' is not a usable duration — {fix}"
        )
        return None

    def source_type(self, raw: Mapping[str, Any]) -> str | None:
        if "from" not in raw:
            return self.event_type
        value = raw["from"]
        if isinstance(value, str) and value in self.field_types:
            return value
        known = sorted(self.field_types)
        self.problem(
            _key_line(raw, "from"),
            f"unknown event type {value!r} in 'from'{_did_you_mean(str(value), known)} "
            f"(known: {', '.join(known)}; leave 'from' out for {self.event_type} events)",
        )
        return None

    def aggregate(
        self, source_type: str | None, raw: Mapping[str, Any], line: int | None
    ) -> tuple[Aggregate, str | None]:
        """The one aggregate and its path; the path is checked once ``from`` is known."""
        found = [a for a in AGGREGATES if a in raw]
        if not found:
            raise self.fail(
                line,
                "needs one aggregate — add 'count: true', 'sum: <number field>', "
                "'distinct: <field>' or 'max: <number field>'",
            )
        if len(found) > 1:
            raise self.fail(
                _key_line(raw, found[1]),
                f"has {len(found)} aggregates ({', '.join(found)}) — keep exactly one and "
                "declare another window for the other",
            )
        aggregate = found[0]
        value, at = raw[aggregate], _key_line(raw, aggregate)
        if aggregate == "count":
            if value is not True:
                raise self.fail(at, f"'count' must be 'true', not {_describe(value)}")
            return aggregate, None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(
                at,
                f"'{aggregate}' needs a field path, e.g. '{aggregate}: "
                f"{'country' if aggregate == 'distinct' else 'amount'}', not {_describe(value)}",
            )
        path = value.strip()
        if source_type is None:
            raise _Bad  # 'from' is wrong (reported); the path cannot be checked
        kind = self.resolve(source_type, path, at)
        if aggregate in ("sum", "max") and kind not in ("number", "any"):
            raise self.fail(
                at,
                f"'{aggregate}' needs a number field, but '{path}' is {kind} — "
                f"{aggregate} a number such as 'amount', or use 'distinct: {path}' or "
                "'count: true'",
            )
        if aggregate == "distinct" and kind in ("array", "object"):
            raise self.fail(
                at, f"'{path}' is a whole {kind} — count distinct values of one of its fields"
            )
        return aggregate, path

    def resolve(self, source_type: str, path: str, line: int | None) -> str:
        """The kind of ``path`` on ``source_type`` events (field or ``scores.<name>``)."""
        if path.startswith(SCORES_PREFIX) or path == "scores":
            scores = self.score_types.get(source_type, {})
            name = path[len(SCORES_PREFIX) :]
            if name in scores:
                return scores[name]
            known = ", ".join(f"scores.{s}" for s in scores) or "none"
            close = difflib.get_close_matches(name, list(scores), n=1, cutoff=0.6)
            hint = f" — did you mean 'scores.{close[0]}'?" if close else ""
            raise self.fail(
                line, f"unknown score '{path}' for {source_type} events{hint} (known: {known})"
            )
        fields = self.field_types.get(source_type, {})
        kind = self._field_kind(fields, path)
        if kind is None:
            shown = sorted(p.replace(".*.", ".0.") for p in fields)
            raise self.fail(
                line,
                f"unknown field '{path}' for {source_type} events{_did_you_mean(path, shown)} "
                f"(known: {', '.join(shown)}; model scores are 'scores.<name>')",
            )
        return kind

    def condition(self, source_type: str, raw: Any, line: int | None) -> Where:
        line = _line(raw, line)
        if not isinstance(raw, Mapping) or not raw:
            raise self.fail(
                line,
                f"a 'where' condition must be a mapping, not {_describe(raw)} — use "
                "'{field: <path>, <operator>: <value>}' or 'all:'/'any:'/'not:'",
            )
        groups = [g for g in _GROUPS if g in raw]
        if not groups:
            return self.test(source_type, raw, line)
        if len(raw) > 1:
            raise self.fail(
                line,
                f"a condition with '{groups[0]}' may hold nothing else (found "
                f"{', '.join(map(str, raw))}) — nest the others inside the list",
            )
        group = groups[0]
        body, body_line = raw[group], _key_line(raw, group)
        if group == "not":
            return WhereNot(self.condition(source_type, body, body_line))
        if not isinstance(body, list) or not body:
            raise self.fail(
                body_line, f"'{group}' needs a non-empty list of conditions, not {_describe(body)}"
            )
        parts: list[Where] = []
        for item in body:
            try:
                parts.append(self.condition(source_type, item, body_line))
            except _Bad:
                continue  # recorded; check the siblings too
        if len(parts) != len(body):
            raise _Bad
        return WhereAll(tuple(parts)) if group == "all" else WhereAny(tuple(parts))

    def test(self, source_type: str, raw: Mapping[str, Any], line: int | None) -> WhereTest:
        allowed = ("field", *WHERE_OPERATORS)
        for key in raw:
            if key not in allowed:
                raise self.fail(
                    _key_line(raw, str(key)),
                    f"unknown key '{key}' in a condition{_did_you_mean(str(key), allowed)} "
                    f"(operators: {', '.join(WHERE_OPERATORS)})",
                )
        path = raw.get("field")
        if not isinstance(path, str) or not path.strip():
            raise self.fail(line, "a condition needs 'field: <path>', e.g. 'field: amount'")
        path = path.strip()
        ops = [op for op in WHERE_OPERATORS if op in raw]
        if len(ops) != 1:
            raise self.fail(
                line,
                f"the condition on '{path}' has {len(ops)} operators — keep exactly one "
                f"({', '.join(ops) or ', '.join(WHERE_OPERATORS)}); combine several with 'all:'",
            )
        op: WhereOp = ops[0]
        kind = self.resolve(source_type, path, line)
        return WhereTest(path, op, self.operand(path, kind, op, raw[op], _key_line(raw, op)))

    def operand(
        self, path: str, kind: str, op: WhereOp, value: Any, line: int | None
    ) -> Scalar | tuple[Scalar, ...] | None:
        if op in _PRESENCE:
            if value is not True:
                other = "missing" if op == "exists" else "exists"
                raise self.fail(
                    line, f"write '{op}: true', not {_describe(value)} (or use '{other}: true')"
                )
            return None
        if op == "matches":
            return self.pattern(path, kind, value, line)
        if kind in ("array", "object", "datetime"):
            raise self.fail(
                line,
                f"'{path}' ({kind}) cannot be compared with '{op}' — compare one of its fields",
            )
        if op not in _LISTS:
            return self.scalar(path, kind, op, value, line)
        if not isinstance(value, list) or not value:
            raise self.fail(line, f"'{op}' needs a non-empty list, e.g. '{op}: [a, b]'")
        checked = tuple(self.scalar(path, kind, op, item, line) for item in value)
        if len({_kind(v) for v in checked}) > 1:
            raise self.fail(line, f"'{op}' mixes kinds of values — use one kind")
        return checked

    def pattern(self, path: str, kind: str, value: Any, line: int | None) -> str:
        if kind not in ("string", "any"):
            raise self.fail(line, f"'{path}' ({kind}) is not text — 'matches' needs a text field")
        if not isinstance(value, str) or not value or len(value) > _MAX_PATTERN:
            raise self.fail(
                line,
                f"'matches' needs a regular expression (1-{_MAX_PATTERN} characters), "
                f"e.g. '(?i)password|locked out', not {_describe(value)}",
            )
        try:
            re.compile(value)
        except re.error as exc:
            raise self.fail(
                line, f"'{value}' is not a valid regular expression ({exc}) — fix or quote it"
            ) from None
        return value

    def scalar(self, path: str, kind: str, op: WhereOp, item: Any, line: int | None) -> Scalar:
        where = f"'{path}' ({kind})"
        if not isinstance(item, str | int | float) or (
            isinstance(item, float) and not math.isfinite(item)
        ):
            raise self.fail(line, f"{where} cannot be compared with {_describe(item)}")
        got = _kind(item)
        if op in _ORDERING and (got != "number" or kind not in ("number", "any")):
            raise self.fail(
                line,
                f"{where} '{op}' {_describe(item)}: '{op}' compares numbers — "
                "use eq/ne/in/not_in/matches for text and true/false",
            )
        expected = _EXPECTED.get(kind)
        if expected is not None and got != expected:
            raise self.fail(
                line,
                f"{where} is compared with {_describe(item)} — compare it with a "
                f"{expected} (quote yes/no/on/off if you mean text)",
            )
        return item


def duplicate_windows(specs: Sequence[WindowSpec]) -> list[RuleProblem]:
    """A problem for each window whose name an earlier one of the same ruleset already
    uses (for merging several files of one ruleset)."""
    first: dict[tuple[str, str], WindowSpec] = {}
    problems: list[RuleProblem] = []
    for spec in specs:
        earlier = first.setdefault((spec.target_type, spec.name), spec)
        if earlier is not spec:
            at = earlier.source
            where = at.file if at.line is None else f"{at.file}:{at.line}"
            problems.append(
                RuleProblem(
                    spec.source.file,
                    spec.source.line,
                    None,
                    f"window '{spec.name}' is declared twice (first at {where}) — "
                    "rename one of them",
                )
            )
    return problems


def parse_windows(
    raw: object,
    *,
    file: str,
    event_type: str,
    field_types: Mapping[str, Mapping[str, str]],
    score_types: Mapping[str, Mapping[str, str]],
    line: int | None = None,
) -> tuple[tuple[WindowSpec, ...], list[RuleProblem]]:
    """The ``windows:`` list of one rule file (``ruleset: event_type``) → specs, problems.

    ``raw`` is the YAML-loaded value; mappings from the loader's line-aware reader give
    every problem its line (``line`` is that of the ``windows:`` key itself). A window
    with any problem is left out; every problem names the window and the fix.
    """
    parser = _Parser(file, event_type, field_types, score_types)
    if raw is None:
        return (), parser.problems
    if not isinstance(raw, list):
        parser.problem(
            line,
            f"'windows' must be a list of windows (each starting with '- name: ...'), "
            f"not {_describe(raw)}",
        )
        return (), parser.problems
    specs = [parser.window(item, i, line) for i, item in enumerate(raw)]
    valid = [s for s in specs if s is not None]
    parser.problems.extend(duplicate_windows(valid))
    first: dict[str, WindowSpec] = {}
    for spec in valid:
        first.setdefault(spec.name, spec)
    return tuple(first.values()), parser.problems
