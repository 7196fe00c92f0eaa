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

Where things are: ``app.rules.window_spec`` (``WindowSpec``, aggregates),
``app.rules.window_where`` (the ``where`` filter and its evaluation),
``app.rules.window_store`` (``WindowStore``) and ``app.rules.window_parse``
(``parse_windows``, called by ``app.rules.loader``). This module re-exports their public
names, so callers import from here.

Pure: no I/O, no durable_rules.
"""

from __future__ import annotations

from app.rules.window_parse import parse_windows
from app.rules.window_spec import (
    AGGREGATES,
    MAX_WITHIN_S,
    Aggregate,
    WindowSpec,
    duplicate_windows,
    window_field_types,
)
from app.rules.window_store import WindowStore
from app.rules.window_where import (
    WHERE_OPERATORS,
    Where,
    WhereAll,
    WhereAny,
    WhereNot,
    WhereTest,
    where_holds,
)

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
