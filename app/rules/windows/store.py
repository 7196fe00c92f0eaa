"""The state of correlation windows: ``WindowStore``, per key and per window, in event time.

Fed one event at a time on the decide worker (``observe_and_read``) or from the ledger on
restart (``replay``); reads are count/sum/distinct/max over ``(t - within, t]``. The
semantics (keys, event time, expiry, restart) are described in ``app.rules.windows``.

Pure: no I/O; not thread-safe.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from app.rules.language.kinds import as_number
from app.rules.windows.spec import Aggregate, WindowSpec
from app.rules.windows.where import compile_where, path_getter

__all__ = ["WindowStore"]

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
        self.holds = None if spec.where is None else compile_where(spec.where)
        self.extract = _extractor(spec)


def _extractor(spec: WindowSpec) -> Callable[[Mapping[str, Any]], Any]:
    """What one event adds: None for count, a number for sum/max, a scalar for distinct;
    ``_SKIP`` when the field is missing or of the wrong kind (the event does not count)."""
    if spec.aggregate == "count" or spec.of is None:
        return lambda fact: None
    get = path_getter(spec.of)
    if spec.aggregate == "distinct":

        def scalar(fact: Mapping[str, Any]) -> Any:
            value = get(fact)
            return value if isinstance(value, str | int | float) else _SKIP

        return scalar

    def number(fact: Mapping[str, Any]) -> Any:
        value = as_number(get(fact))
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
    ``evicted_keys``).

    Expiry is per key: a key's entries are trimmed against that key's own newest event
    (minus ``allowed_lateness_s``), because one key's events come from one partition
    while partitions may be far apart in event time (a consumer catching up on a
    backlog reads one partition ahead of another). Every ``max(10_000, keys)``
    observations a sweep trims every key that way and drops keys idle for longer than
    their longest window plus ``idle_grace_s`` behind the overall watermark (largest
    ``occurred_at`` seen) — the bound on partition skew the windows tolerate.
    """

    def __init__(
        self,
        specs: Sequence[WindowSpec],
        *,
        max_keys: int = 200_000,
        max_entries_per_key: int = 1_000,
        allowed_lateness_s: float = 60.0,
        idle_grace_s: float = 3600.0,
    ) -> None:
        if max_keys < 1 or max_entries_per_key < 1 or allowed_lateness_s < 0:
            raise ValueError(
                "max_keys and max_entries_per_key must be >= 1 and allowed_lateness_s >= 0"
            )
        self._max_keys = max_keys
        self._max_entries = max_entries_per_key
        self._lateness_us = round(allowed_lateness_s * 1_000_000)
        self._idle_grace_us = round(max(idle_grace_s, allowed_lateness_s) * 1_000_000)
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
            self._sweep(self._watermark)

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
        # Trim what no read of this key can reach any more (judged by the key's own newest
        # event, not the overall watermark: see the class docstring) before inserting, so
        # a very late event still counts in its own read (the next sweep drops it).
        newest = max(times[-1], t) if times else t
        cutoff = newest - self._lateness_us - window.within_us
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
        return self._sweep(_micros(now), explicit=True)

    def _sweep(self, now: int, *, explicit: bool = False) -> int:
        self._since_sweep = 0
        within = {w.slot: w.within_us for w in self._windows}
        before = self._entries
        empty: list[str] = []
        for key, state in self._keys.items():
            for slot, series in list(state.items()):
                times = series.times
                if explicit:
                    cutoff = now - within[slot]
                    if times[0] <= cutoff:
                        self._drop_front(series, bisect_right(times, cutoff))
                elif times[-1] <= now - within[slot] - self._idle_grace_us:
                    self._drop_front(series, len(times))  # idle far behind everyone
                else:
                    cutoff = times[-1] - self._lateness_us - within[slot]
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
