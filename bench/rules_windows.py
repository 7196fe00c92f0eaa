"""Correlation windows: throughput and memory of ``WindowStore`` over 1M transactions.

The stream: ``--events`` transactions over ``--keys`` accounts at ``--rate`` events per
second of event time (Poisson), 1 % of them up to 30 s late (out of order) and
``--hot-share`` of them on one hot account (it hits ``max_entries_per_key``). Each event
is the fact the service builds (``{**event_json, "scores": {...}}``). Two windows, as in
the issue: distinct countries of amount > 500 in 10 min, and a count over 1 h.

- **baseline**: the same stream with no windows: only building the fact.
- **windows**: building the fact + ``observe_and_read``; RSS (``VmRSS``) and store stats
  every 100k events: after the first hour of event time the windows are full and RSS
  must stay flat.
- **rebuild**: ``replay`` of one horizon (1 h) of events into a fresh store, as the
  service does on restart from the ledger.

durable_rules joins are not used for any of this: their state piles up and
``delete_state`` segfaults (``docs/dependencies.md``, durable_rules), so the state lives in
Arbiter.

    .venv/bin/python bench/rules_windows.py [--events 1000000] [--no-record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchlib import git_commit

from app.rules.language.spec import SourceRef
from app.rules.windows.spec import WindowSpec
from app.rules.windows.store import WindowStore
from app.rules.windows.where import WhereTest

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
COUNTRIES = ("DE", "FR", "GB", "US", "ES", "IT", "NL", "PL", "SE", "AT", "BE", "CH")
CATEGORIES = ("grocery", "travel", "electronics", "fuel", "restaurants", "digital_goods")
CHUNK = 10_000  # generated ahead of timing; small, so the pending chunk adds little RSS
REPORT_EVERY = 100_000

Event = tuple[str, dt.datetime, dict[str, Any], float]

SPECS = (
    WindowSpec(
        name="countries_over_500_10m",
        within_s=600,
        source_type="transaction",
        target_type="transaction",
        where=WhereTest("amount", "gt", 500),
        aggregate="distinct",
        of="country",
        source=SourceRef("bench", None),
    ),
    WindowSpec(
        name="tx_1h",
        within_s=3600,
        source_type="transaction",
        target_type="transaction",
        where=None,
        aggregate="count",
        of=None,
        source=SourceRef("bench", None),
    ),
)


def stream(n: int, *, keys: int, rate: float, hot_share: float, seed: int) -> Iterator[Event]:
    """``n`` transaction facts' inputs (key, occurred_at, JSON dump, fraud score)."""
    rng = random.Random(seed)
    accounts = [f"acct-{k:06d}" for k in range(keys)]
    home = [rng.choice(COUNTRIES) for _ in range(keys)]
    offset = 0.0
    for i in range(n):
        offset += rng.expovariate(rate)
        k = 0 if rng.random() < hot_share else rng.randrange(keys)
        late = rng.uniform(0, 30) if rng.random() < 0.01 else 0.0
        when = START + dt.timedelta(seconds=max(0.0, offset - late))
        country = home[k] if rng.random() < 0.9 else rng.choice(COUNTRIES)
        raw = {
            "event_id": f"tx-{seed}-{i:08d}",
            "occurred_at": when.isoformat(),
            "attributes": {"account_age_days": 400},
            "account_id": accounts[k],
            "amount": round(rng.lognormvariate(4.5, 1.2), 2),
            "currency": "EUR",
            "merchant": "Shop",
            "merchant_category": rng.choice(CATEGORIES),
            "channel": "online",
            "country": country,
            "card_country": home[k],
            "device": {"device_id": f"dev-{k}", "kind": "mobile", "is_new": False},
        }
        yield accounts[k], when, raw, rng.random()


def chunks(events: Iterator[Event]) -> Iterator[list[Event]]:
    while True:
        chunk = [e for _, e in zip(range(CHUNK), events, strict=False)]
        if not chunk:
            return
        yield chunk


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(args: argparse.Namespace, store: WindowStore | None) -> list[dict[str, Any]]:
    """Process the stream; one row per ``REPORT_EVERY`` events."""
    rows: list[dict[str, Any]] = []
    done, busy, last_busy, last_done = 0, 0.0, 0.0, 0
    events = stream(
        args.events, keys=args.keys, rate=args.rate, hot_share=args.hot_share, seed=args.seed
    )
    for chunk in chunks(events):
        started = time.perf_counter()
        if store is None:
            for _key, _when, raw, fraud in chunk:
                fact = {**raw, "scores": {"fraud": fraud}}
        else:
            read = store.observe_and_read
            for key, when, raw, fraud in chunk:
                fact = {**raw, "scores": {"fraud": fraud}}
                read("transaction", key, when, fact)
        busy += time.perf_counter() - started
        done += len(chunk)
        if done % REPORT_EVERY == 0 or done == args.events:
            row = {
                "events": done,
                "rate": (done - last_done) / (busy - last_busy),
                "rss": rss_mb(),
                "event_hours": (chunk[-1][1] - START).total_seconds() / 3600,
            }
            if store is not None:
                row.update(store.stats)
            rows.append(row)
            last_busy, last_done = busy, done
    del fact
    return rows


def rebuild_rate(args: argparse.Namespace) -> tuple[int, float]:
    """Events/s of ``replay`` over one horizon of events into a fresh store."""
    n = int(max(s.within_s for s in SPECS) * args.rate)
    events = [
        ("transaction", key, when, {**raw, "scores": {"fraud": fraud}})
        for key, when, raw, fraud in stream(
            n, keys=args.keys, rate=args.rate, hot_share=args.hot_share, seed=args.seed + 1
        )
    ]
    store = WindowStore(SPECS)
    started = time.perf_counter()
    store.replay(events)
    return n, n / (time.perf_counter() - started)


def table(base: list[dict[str, Any]], win: list[dict[str, Any]]) -> str:
    lines = [
        "| events | event time h | baseline events/s | windows events/s | ratio | "
        "RSS MB baseline | RSS MB windows | keys | entries | truncated | evicted |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b, w in zip(base, win, strict=True):
        lines.append(
            f"| {w['events']:,} | {w['event_hours']:.2f} | {b['rate']:,.0f} | "
            f"{w['rate']:,.0f} | {w['rate'] / b['rate']:.2f} | {b['rss']:.0f} | "
            f"{w['rss']:.0f} | {w['keys']:,} | {w['entries']:,} | "
            f"{w['truncated_entries']:,} | {w['evicted_keys']:,} |"
        )
    return "\n".join(lines)


def summary(
    base: list[dict[str, Any]], win: list[dict[str, Any]], rebuild: tuple[int, float]
) -> str:
    total_events = win[-1]["events"]
    base_rate = total_events / sum(REPORT_EVERY / r["rate"] for r in base)
    win_rate = total_events / sum(REPORT_EVERY / r["rate"] for r in win)
    full = [r for r in win if r["event_hours"] >= 1.0]
    flat = (
        f"{min(r['rss'] for r in full):.0f} to {max(r['rss'] for r in full):.0f} MB "
        f"over {len(full)} reports after the 1 h window filled"
        if full
        else "n/a (the run never covered 1 h of event time)"
    )
    cost_us = 1e6 / win_rate - 1e6 / base_rate
    return (
        f"- overall: baseline {base_rate:,.0f} events/s, windows {win_rate:,.0f} events/s "
        f"(≈ {cost_us:.1f} µs per event for two windows)\n"
        f"- RSS with windows: {flat}; baseline end {base[-1]['rss']:.0f} MB\n"
        f"- rebuild (``replay`` of one 1 h horizon, {rebuild[0]:,} events): "
        f"{rebuild[1]:,.0f} events/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=3_000)
    parser.add_argument("--rate", type=float, default=50.0, help="events per event-time second")
    parser.add_argument("--hot-share", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())

    base = run(args, None)
    store = WindowStore(SPECS)
    win = run(args, store)
    rebuild = rebuild_rate(args)
    text = f"{table(base, win)}\n\n{summary(base, win, rebuild)}"
    print(text)
    if args.no_record:
        return
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"\n## rules: correlation windows — {now}\n\n"
        f"- machine: {os.cpu_count()} CPUs (nproc), Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, load average before the run {load}\n"
        f"- git commit: {git_commit()}\n"
        f"- stream: {args.events:,} transactions, {args.keys:,} accounts, {args.rate:g} "
        f"events per event-time second, 1 % up to 30 s late, {args.hot_share:.0%} on one "
        f"hot account (seed {args.seed}); windows: distinct countries of amount > 500 "
        "in 10 min, count in 1 h (defaults: max_entries_per_key 1,000, max_keys 200,000)\n"
        "- baseline = the same stream with no windows (building the fact only); "
        "events/s are per 100k-event step, time spent processing only\n"
        "- durable_rules joins are not used: docs/dependencies.md records their state piling up "
        "(`delete_state` segfaults, per-event sessions hit a C limit), so windows are "
        "Arbiter's own bounded per-key state\n\n"
        f"{text}\n"
    )
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(section)
    print(f"\nappended to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
