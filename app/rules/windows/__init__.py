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
safely at volume (``docs/dependencies.md``, durable_rules), so the state lives in
Arbiter and durable only ever sees single-message rules over plain fields.

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

Where things are: ``spec`` (``WindowSpec``, aggregates), ``where`` (the ``where``
filter and its evaluation), ``store`` (``WindowStore``) and ``parse``
(``parse_windows``, called by ``app.rules.loader``). Import each name from the module
that defines it; this package file holds only this overview.

Pure: no I/O, no durable_rules.
"""
