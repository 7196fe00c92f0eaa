"""Rules throughput: the engine through 10, 100 and 1,000 rules, correlation windows, and
the end-to-end cost of the rules stage.

1. **engine**: generated ``transaction`` rule files (a realistic mix: comparisons on
   amount / channel / country / merchant_category / device.is_new / scores.fraud, all /
   any / not nesting, ``in`` lists, a few ``matches`` and ``{expr: ...}`` conditions,
   tag and publish actions, interpolated reasons; distinct names, varied thresholds and
   priority tiers, so ``load_rulesets`` accepts them — no unreachable rule) with 10, 100
   and 1,000 rules, in stop and in collect mode. ``RulesEngine.evaluate`` on batches of
   1,000 simulator transactions (facts built beforehand, as the pipeline hands them
   over); events/s = best of ``--repeat`` passes. Baseline: 10 rules, same mode.
2. **windows**: the same 100 rules, then the same file plus a ``windows:`` section
   (distinct countries of amount > 500 in 10 min per account) and one rule reading it;
   each fact goes through ``WindowStore.observe_and_read`` before ``evaluate``, as the
   service does (a fresh store per pass). Baseline: the file without windows.
3. **e2e**: ``bench/e2e.py``'s ``arbiter`` scenario (the real pipeline in-process, its
   own embedded broker per run), with the shipped rules and with a rules folder whose
   rulesets have only their (shipped) default and ``rules: []`` (the loader accepts an
   empty list: no durable ruleset is registered, no windows are kept). Runs alternate
   off/on ``--e2e-repeat`` times; best of each. Baseline: rules off.

Memory after 1M events with windows is ``bench/rules_windows.py``'s figure: the latest
one in ``bench/RESULTS.md`` is quoted, not re-measured. durable_rules joins are not used
for correlation (``docs/dependencies.md``, durable_rules: their state piles up and
``delete_state`` segfaults); windows are Arbiter's own bounded per-key state.

    .venv/bin/python bench/rules.py [--events 5000] [--sizes 10,100,500,1000] [--skip-e2e]
    .venv/bin/python bench/rules.py --events 2000 --e2e-events 5000 --no-record

Prints a table and appends a dated section to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from benchlib import RESULTS, append_results, git_commit, shipped_catalog

from app.rules.language.spec import RuleSet
from app.rules.loader import check_rules, load_rulesets
from app.rules.runtime.engine import RulesEngine
from app.rules.windows.store import WindowStore
from app.settings import Settings
from app.simulator.generate import training_set
from app.trainer.jobs.first import train_missing
from app.wiring import rule_vocabulary

REPO = Path(__file__).resolve().parent.parent
SHIPPED_RULES = REPO / "rules"
BATCH = 1_000
MODES = ("stop", "collect")
WINDOW = "countries_over_500_10m"

CHANNELS = ("card_present", "online", "mobile_app", "atm", "transfer")
COUNTRIES = (
    "US",
    "DE",
    "GB",
    "FR",
    "IT",
    "CA",
    "ES",
    "AU",
    "CH",
    "NL",
    "BE",
    "NZ",
    "IE",
    "SG",
    "AT",
    "GR",
    "TH",
    "TR",
    "RO",
    "ID",
    "ZA",
    "NG",
    "MX",
    "PH",
    "MA",
    "PT",
    "VN",
    "CN",
    "AE",
    "BR",
)
CATEGORIES = (
    "grocery",
    "restaurants",
    "cash_withdrawal",
    "clothing",
    "fuel",
    "digital_goods",
    "electronics",
    "travel",
    "money_transfer",
    "gambling",
    "jewelry",
)
DECISIONS = ("decline", "review", "review", "hold")
TIERS = (100, 50, 20, 10, 0)
PATTERNS = (
    "(?i)casino|bet|poker",
    "(?i)^(air|hotel)",
    "(?i)crypto|coin",
    "(?i)gift ?card",
    "(?i)pawn|gold",
)
EXPRS = (
    "{k} * attributes.account_age_days + {c}",
    "({c} + attributes.account_age_days) * {k}",
    "{c} - attributes.account_age_days / {k}",
)


# --- rule generation -------------------------------------------------------------------


def _amount(rng: random.Random) -> float:
    """A threshold where the simulator's amounts are (median ~50, p90 ~330, tail to 50k)."""
    return round(rng.lognormvariate(5.8, 1.3), 2)


def _channel(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.5:
        return {"field": "channel", "eq": rng.choice(CHANNELS)}
    return {"field": "channel", "in": rng.sample(CHANNELS, rng.randint(2, 3))}


def _country(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.8:
        return {"field": "country", "in": rng.sample(COUNTRIES, rng.randint(1, 4))}
    return {"field": "country", "not_in": rng.sample(COUNTRIES, rng.randint(4, 10))}


def _category(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.4:
        return {"field": "merchant_category", "eq": rng.choice(CATEGORIES)}
    return {"field": "merchant_category", "in": rng.sample(CATEGORIES, rng.randint(2, 3))}


ATOMS: dict[str, tuple[int, Callable[[random.Random], dict[str, Any]]]] = {
    # kind: (weight, make)
    "amount": (5, lambda rng: {"field": "amount", rng.choice(("gt", "gte")): _amount(rng)}),
    "fraud": (4, lambda rng: {"field": "scores.fraud", "gte": round(rng.uniform(0.3, 0.99), 3)}),
    "channel": (3, _channel),
    "country": (3, _country),
    "category": (3, _category),
    "new_device": (2, lambda _rng: {"field": "device.is_new", "eq": True}),
    "small": (1, lambda rng: {"field": "amount", "lt": round(rng.uniform(1, 20), 2)}),
}


def _atom(rng: random.Random, kinds: Sequence[str] = tuple(ATOMS)) -> dict[str, Any]:
    kind = rng.choices(kinds, weights=[ATOMS[k][0] for k in kinds])[0]
    return ATOMS[kind][1](rng)


def _special(rng: random.Random) -> dict[str, Any]:
    """A regular expression or an arithmetic comparison (a few per ruleset)."""
    if rng.random() < 0.5:
        return {"field": "merchant", "matches": rng.choice(PATTERNS)}
    expr = rng.choice(EXPRS).format(k=rng.randint(2, 40), c=rng.randint(100, 5_000))
    return {"field": "amount", "gt": {"expr": expr}}


def _when(rng: random.Random) -> dict[str, Any]:
    """Mostly specific rules (a category or a few countries, an amount or score band and
    one more signal), as large rulesets tend to be; a few broad score rules."""
    shape = rng.choices(
        ("score", "all", "all_any", "all_not", "special"), weights=(8, 45, 20, 14, 13)
    )[0]
    amount = {"field": "amount", rng.choice(("gt", "gte")): _amount(rng)}
    if shape == "score":
        return {
            "all": [
                {"field": "scores.fraud", "gte": round(rng.uniform(0.6, 0.99), 3)},
                amount,
            ]
        }
    anchor = _atom(rng, ("category", "country"))
    atoms = [anchor, amount, _atom(rng, ("fraud", "channel", "new_device", "country"))]
    if shape == "all_any":
        atoms.append({"any": [_atom(rng) for _ in range(rng.randint(2, 3))]})
    elif shape == "all_not":
        atoms.append({"not": _atom(rng, ("channel", "category", "small"))})
    elif shape == "special":
        atoms.append(_special(rng))
    return {"all": atoms}


def _rule(rng: random.Random, number: int) -> dict[str, Any]:
    decision = rng.choice(DECISIONS)
    rule: dict[str, Any] = {
        "name": f"{decision}_g{number:04d}",
        "priority": rng.choice(TIERS),
        "when": _when(rng),
        "decision": decision,
        "reason": rng.choice(
            (
                f"Generated rule {number}.",
                "{amount} {currency} at {merchant} ({merchant_category}).",
                "Fraud score {scores.fraud:.2f}, channel {channel}, country {country}.",
            )
        ),
    }
    roll = rng.random()
    if roll < 0.3:
        rule["actions"] = [{"tag": [rng.choice(("fraud", "velocity", "geo", "device"))]}]
    elif roll < 0.4:
        rule["actions"] = [{"publish": "fraud-alerts"}, {"tag": ["fraud"]}]
    return rule


def _document(rules: list[dict[str, Any]], mode: str, windows: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ruleset": "transaction",
        "mode": mode,
        "default": {"decision": "approve", "reason": "No risk signal matched."},
    }
    if windows:
        doc["windows"] = [
            {
                "name": WINDOW,
                "within": "10m",
                "where": {"field": "amount", "gt": 500},
                "distinct": "country",
            }
        ]
        rules = [
            {
                "name": "review_many_countries",
                "priority": 50,
                "when": {"field": f"windows.{WINDOW}", "gte": 3},
                "decision": "review",
                "reason": "{windows.countries_over_500_10m:.0f} countries over 500 in 10 minutes.",
                "actions": [{"tag": ["velocity"]}],
            },
            *rules,
        ]
    doc["rules"] = rules
    return doc


def _write(folder: Path, doc: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "transaction.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


VOCABULARY = rule_vocabulary(Settings(event_types=("transaction",)))


def generate_rules(n: int, seed: int, work: Path) -> list[dict[str, Any]]:
    """``n`` rules that ``load_rulesets`` accepts in stop mode: identical conditions are
    skipped while generating; rules the loader reports as unreachable (a broader rule
    at the same priority comes first) are replaced until none is left."""
    rng = random.Random(seed)
    seen: set[str] = set()
    number = 0

    def fresh() -> dict[str, Any]:
        nonlocal number
        while True:
            number += 1
            rule = _rule(rng, number)
            key = json.dumps(rule["when"], sort_keys=True)
            if key not in seen:
                seen.add(key)
                return rule

    rules = [fresh() for _ in range(n)]
    folder = work / f"check-{n}"
    for _ in range(20):
        _write(folder, _document(rules, "stop", windows=False))
        _, problems = check_rules(folder, *VOCABULARY)
        if not problems:
            return rules
        bad = {p.rule for p in problems}
        unknown = [p for p in problems if p.rule is None or "can never match" not in str(p)]
        if unknown:
            raise RuntimeError("generated rules refused:\n" + "\n".join(map(str, unknown)))
        rules = [r if r["name"] not in bad else fresh() for r in rules]
    raise RuntimeError(f"could not generate {n} reachable rules")


def load(folder: Path) -> dict[str, RuleSet]:
    return load_rulesets(folder, *VOCABULARY)


# --- engine measurements ---------------------------------------------------------------


@dataclass
class Facts:
    facts: list[dict[str, Any]]
    keys: list[str]
    times: list[dt.datetime]


def make_facts(n: int, seed: int) -> Facts:
    events, _ = training_set("transaction", n, seed=seed)
    rng = random.Random(seed)
    # Mostly low fraud scores with a tail, like a fraud model's output.
    facts = [
        {**e.model_dump(mode="json"), "scores": {"fraud": round(rng.random() ** 3, 4)}}
        for e in events
    ]
    return Facts(facts, [e.partition_key for e in events], [e.occurred_at for e in events])


@dataclass
class Figure:
    label: str
    rules: int
    mode: str
    rate: float = 0.0
    matched: float = 0.0  # share of events decided by a rule (not the default)
    fired: float = 0.0  # rules fired per event
    load_s: float = 0.0  # load_rulesets + RulesEngine() (durable compile)
    error: str | None = None  # durable failed on some events: rate is on the others
    extra: dict[str, Any] = field(default_factory=dict)


def best_rate(n: int, repeat: int, one_pass: Callable[[], list[Any]]) -> tuple[float, list[Any]]:
    best, results = float("inf"), []
    for _ in range(repeat):
        started = time.perf_counter()
        results = one_pass()
        best = min(best, time.perf_counter() - started)
    return n / best, results


def _passes(engine: RulesEngine, facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The facts durable evaluates without an error, one at a time."""
    kept = []
    for fact in facts:
        try:
            engine.evaluate("transaction", [fact])
        except Exception:
            continue
        kept.append(fact)
    return kept


def measure(
    label: str,
    folder: Path,
    data: Facts,
    repeat: int,
    *,
    windows: bool = False,
) -> Figure:
    """events/s of ``evaluate`` (with ``observe_and_read`` first when ``windows``).

    When durable fails on some events (its error 303 = ERR_MAX_STACK_SIZE with large
    rulesets), the error is recorded with how many events fail, and the rate is measured
    again on the events it accepts (marked in the table)."""
    started = time.perf_counter()
    rulesets = load(folder)
    engine = RulesEngine(rulesets)
    ruleset = rulesets["transaction"]
    fig = Figure(label, len(ruleset.rules), ruleset.mode, load_s=time.perf_counter() - started)
    specs = ruleset.windows
    facts = [dict(f) for f in data.facts]
    index = list(range(len(facts)))

    def one_pass() -> list[Any]:
        out: list[Any] = []
        store = WindowStore(specs) if windows else None
        for start in range(0, len(index), BATCH):
            chunk = [facts[i] for i in index[start : start + BATCH]]
            if store is not None:
                read = store.observe_and_read
                for i, fact in zip(index[start : start + BATCH], chunk, strict=True):
                    fact["windows"] = read("transaction", data.keys[i], data.times[i], fact)
            out.extend(engine.evaluate("transaction", chunk))
        return out

    try:
        try:
            fig.rate, results = best_rate(len(index), repeat, one_pass)
        except Exception as exc:
            error = " ".join(f"{type(exc).__name__}: {exc}".split())
            kept = {id(f) for f in _passes(engine, facts)}
            index = [i for i in index if id(facts[i]) in kept]
            fig.error = f"{error} on {len(facts) - len(index):,} of {len(facts):,} events"
            print(f"  {label} {fig.rules} {fig.mode}: {fig.error}", flush=True)
            if not index:
                return fig
            fig.rate, results = best_rate(len(index), repeat, one_pass)
            fig.extra["measured_on"] = len(index)
    finally:
        engine.close()
    fig.matched = sum(r.rule is not None for r in results) / len(results)
    fig.fired = sum(len(r.rules_fired) for r in results) / len(results)
    if windows:
        fig.extra["window_fired"] = sum("review_many_countries" in r.rules_fired for r in results)
        fig.extra["window_max"] = max(f.get("windows", {}).get(WINDOW, 0) for f in facts)
    return fig


# --- end to end ------------------------------------------------------------------------


def rules_off_folder(folder: Path) -> Path:
    """One file per event type: the shipped ruleset's default, ``rules: []``."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(SHIPPED_RULES.glob("*.yaml")):
        shipped = yaml.safe_load(path.read_text())
        doc = {"ruleset": shipped["ruleset"], "default": shipped["default"], "rules": []}
        (folder / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    load_rulesets(folder, *rule_vocabulary(Settings()))  # fails loudly if refused
    return folder


async def e2e_runs(args: argparse.Namespace, work: Path) -> dict[str, list[Any]]:
    sys.path.insert(0, str(REPO / "bench"))
    import e2e

    from app.logs import configure_logging

    configure_logging("console", "error")  # e2e dead-letters 2 %: one line each
    models_dir = args.models_dir or work / "models"
    print(f"e2e: models {models_dir} (training if absent) …", flush=True)
    await asyncio.get_running_loop().run_in_executor(
        None, train_missing, models_dir, shipped_catalog()
    )
    folders = {"off": rules_off_folder(work / "rules-off"), "on": SHIPPED_RULES}
    figs: dict[str, list[Any]] = {"off": [], "on": []}
    for attempt in range(args.e2e_repeat):
        for state in ("off", "on"):
            e2e.SETTINGS_EXTRA["rules_dir"] = folders[state]
            root = work / f"e2e-{state}-{attempt}"
            root.mkdir()
            fig = await e2e.run_scenario(
                "arbiter",
                args.e2e_events,
                seed=args.seed,
                root=root,
                models_dir=models_dir,
                limit_s=args.e2e_timeout,
            )
            figs[state].append(fig)
    e2e.SETTINGS_EXTRA.pop("rules_dir", None)
    return figs


def best_e2e(figs: list[Any], steady: bool = False) -> float | None:
    rates = [f.steady_rate if steady else f.rate for f in figs]
    good = [r for r in rates if r]
    return max(good) if good else None


# --- report ----------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "—" if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}x"


def engine_table(figs: list[Figure], base: dict[str, Figure]) -> str:
    rows = [
        "| measurement | rules | mode | events/s | baseline | baseline events/s | ratio "
        "| decided by a rule | rules fired / event | load+compile s |",
        "|---|---:|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for f in figs:
        b = base[f.label + f.mode]
        rate = fmt(f.rate) if f.rate else "FAILED"
        if f.error:
            notes.append(f"- FAILED: {f.label}, {f.rules:,} rules, {f.mode}: {f.error}")
            if f.rate:
                rate += f" (on the {f.extra['measured_on']:,} events durable accepts)"
        rows.append(
            f"| {f.label} | {f.rules:,} | {f.mode} | {rate} | {b.label} ({b.rules:,} "
            f"rules, {b.mode}) | {fmt(b.rate)} | {ratio(f.rate or None, b.rate)} "
            f"| {f.matched:.1%} | {f.fired:.2f} | {f.load_s:.2f} |"
        )
    return "\n".join(rows + (["", *notes] if notes else []))


def e2e_table(figs: dict[str, list[Any]], n: int) -> str:
    rows = [
        "| e2e arbiter (N each) | events/s (best) | after join (best) | runs events/s "
        "| latency p50 / p99 ms (best run) |",
        "|---|---:|---:|---|---:|",
    ]
    for state, label in (("off", "rules off (baseline)"), ("on", "rules on (shipped)")):
        runs = figs[state]
        ok = [f for f in runs if f.rate]
        lat = "—"
        if ok:
            top = max(ok, key=lambda f: f.rate)
            p50 = sorted(top.latencies_ms)[len(top.latencies_ms) // 2]
            p99 = sorted(top.latencies_ms)[int(0.99 * (len(top.latencies_ms) - 1))]
            lat = f"{p50:.1f} / {p99:.1f}"
        each = ", ".join("FAILED" if f.error else fmt(f.rate) for f in runs)
        rows.append(
            f"| {label} {n:,} | {fmt(best_e2e(runs))} | {fmt(best_e2e(runs, True))} "
            f"| {each} | {lat} |"
        )
    on, off = best_e2e(figs["on"]), best_e2e(figs["off"])
    on_s, off_s = best_e2e(figs["on"], True), best_e2e(figs["off"], True)
    rows.append("")
    rows.append(f"- rules on / rules off: {ratio(on, off)} (after join: {ratio(on_s, off_s)})")
    errors = [f.error for fs in figs.values() for f in fs if f.error]
    if errors:
        rows.append(f"- failed runs: {'; '.join(errors)}")
    return "\n".join(rows)


def windows_memory_note() -> str:
    """The latest ``bench/rules_windows.py`` figures in RESULTS.md, quoted."""
    if not RESULTS.exists():
        return "- memory after 1M events with windows: no `bench/rules_windows.py` run recorded"
    text = RESULTS.read_text(encoding="utf-8")
    sections = re.split(r"\n(?=## )", text)
    runs = [s for s in sections if s.startswith("## rules: correlation windows")]
    if not runs:
        return "- memory after 1M events with windows: no `bench/rules_windows.py` run recorded"
    last = runs[-1]
    when = last.splitlines()[0].split("—", 1)[-1].strip()
    rss = re.search(r"^- RSS with windows: (.*)$", last, re.M)
    overall = re.search(r"^- overall: (.*)$", last, re.M)
    events = re.search(r"^- stream: ([\d,]+) transactions", last, re.M)
    return (
        f"- memory with windows (not re-measured here; `bench/rules_windows.py`, run of "
        f"{when}, {events.group(1) if events else '?'} events): RSS "
        f"{rss.group(1) if rss else '?'}; {overall.group(1) if overall else '?'}"
    )


# --- driver ----------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes are rule counts >= 1, e.g. 10,100,1000")
    return sizes


def run_engine(
    args: argparse.Namespace, data: Facts, work: Path
) -> tuple[list[Figure], dict[str, Figure]]:
    """Parts 1 and 2: every (size, mode), then windows off/on; the last figure is 'on'."""
    figs: list[Figure] = []
    base: dict[str, Figure] = {}
    generated: dict[int, list[dict[str, Any]]] = {}
    for n in sorted({*args.sizes, args.window_rules}):
        t0 = time.perf_counter()
        generated[n] = generate_rules(n, args.seed + n, work)
        print(f"generated {n:,} rules in {time.perf_counter() - t0:.1f}s", flush=True)
    for mode in MODES:
        for n in args.sizes:
            folder = _write(work / f"{mode}-{n}", _document(generated[n], mode, False))
            fig = measure("engine", folder, data, args.repeat)
            base.setdefault("engine" + mode, fig)
            figs.append(fig)
            print(f"engine {n:,} rules {mode}: {fmt(fig.rate)} events/s", flush=True)
    rules = generated[args.window_rules]
    plain = _write(work / "win-off", _document(rules, "stop", False))
    with_window = _write(work / "win-on", _document(rules, "stop", True))
    off = measure("windows off", plain, data, args.repeat)
    on = measure("windows on", with_window, data, args.repeat, windows=True)
    base["windows offstop"] = off
    base["windows onstop"] = off
    figs += [off, on]
    print(f"windows off {fmt(off.rate)} / on {fmt(on.rate)} events/s", flush=True)
    return figs, base


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_000, help="facts per engine pass")
    parser.add_argument("--sizes", type=parse_sizes, default=[10, 100, 500, 1000])
    parser.add_argument("--window-rules", type=int, default=100, help="rules beside the window")
    parser.add_argument("--repeat", type=int, default=3, help="engine passes; best is kept")
    parser.add_argument("--e2e-events", type=int, default=10_000)
    parser.add_argument("--e2e-repeat", type=int, default=2, help="off/on pairs; best is kept")
    parser.add_argument("--e2e-timeout", type=float, default=150.0, help="seconds per run")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--models-dir", type=Path, help="e2e: reuse trained models from here")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.perf_counter()

    data = make_facts(args.events, args.seed)
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-rules-") as tmp:
        work = Path(tmp)
        figs, base = run_engine(args, data, work)
        e2e_figs = None if args.skip_e2e else asyncio.run(e2e_runs(args, work))

    on = figs[-1]
    engine_text = engine_table(figs, base)
    notes = [
        f"- windows on: the {args.window_rules}-rule file + window '{WINDOW}' (distinct "
        f"countries of amount > 500 in 10 min per account) + 1 rule reading it; "
        f"`observe_and_read` per fact before `evaluate` (a fresh store per pass); the "
        f"window rule fired on {on.extra.get('window_fired', 0):,} of {args.events:,} "
        f"events (highest window value {on.extra.get('window_max', 0):g}: the simulator "
        "spreads transactions over many accounts and days, so the cost measured is the "
        "window upkeep and read, not extra firing)",
        windows_memory_note(),
    ]
    text = f"{engine_text}\n\n" + "\n".join(notes)
    if e2e_figs is not None:
        text += "\n\n" + e2e_table(e2e_figs, args.e2e_events)
    print()
    print(text)
    print(f"\n(total {time.perf_counter() - started:.0f}s)")
    if args.no_record:
        return 0
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    e2e_line = (
        "- e2e: skipped (--skip-e2e)\n"
        if e2e_figs is None
        else f"- e2e: `bench/e2e.py`'s arbiter scenario in-process, N={args.e2e_events:,} "
        f"(seed {args.seed}, 2 % malformed), {args.e2e_repeat} alternating off/on runs, "
        "each on a fresh embedded broker, best kept. Rules on = the shipped `rules/` "
        "(incl. 2 transaction windows); rules off = each type's shipped default with "
        "`rules: []` (accepted by the loader: nothing registered in durable, no windows)\n"
    )
    section = (
        f"\n## rules: engine throughput, windows, rules on/off end to end — {now}\n\n"
        f"- machine: {os.cpu_count()} CPUs (nproc), Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, load average before the run "
        f"{load_before}\n"
        f"- git commit: {git_commit()}\n"
        f"- engine: generated transaction rules (seeded; comparisons on amount / channel / "
        "country / merchant_category / device.is_new / scores.fraud, all/any/not nesting, "
        "`in`/`not_in` lists, ~6 % `matches`, ~6 % `{expr: ...}`, priority tiers, tag/"
        f"publish actions, interpolated reasons); {args.events:,} simulator transactions "
        f"(`training_set`, seed {args.seed}, fraud score = random³) in `evaluate` batches "
        f"of {BATCH:,}, facts built beforehand; events/s = best of {args.repeat} passes. "
        "Baselines: 10 rules in the same mode; windows off for windows on\n"
        f"{e2e_line}"
        "- durable_rules joins are not used for correlation: docs/dependencies.md records their "
        "state piling up (`delete_state` segfaults), so windows are Arbiter's own bounded "
        "per-key state, read by rules as fields\n\n"
        f"{text}\n"
    )
    return append_results(section)


if __name__ == "__main__":
    sys.exit(main())
