"""Correlation windows: parsing ``windows:`` with located problems, and the per-key
event-time aggregates (explicit ``at`` times are the clock; no timing assertions)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from app.declarations.yamlsrc import LineLoader
from app.rules.language.spec import RuleProblem, SourceRef
from app.rules.windows.parse import parse_windows
from app.rules.windows.spec import WindowSpec, window_field_types
from app.rules.windows.store import WindowStore
from app.rules.windows.where import Where, WhereAll, WhereAny, WhereNot, WhereTest, where_holds
from app.simulator.shapes import EVENT_MODELS, field_types
from tests.shipped import SCORE_TYPES

FIELD_TYPES = {t: field_types(t) for t in EVENT_MODELS}
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def tx(amount: float = 100.0, country: str = "DE", fraud: float = 0.1) -> dict[str, Any]:
    """A transaction fact as the service builds it: the JSON dump plus scores."""
    return {
        "event_id": "t",
        "account_id": "acct-1",
        "amount": amount,
        "currency": "EUR",
        "merchant": "Shop",
        "merchant_category": "travel",
        "channel": "online",
        "country": country,
        "card_country": "DE",
        "device": {"device_id": "d1", "kind": "mobile", "is_new": False},
        "attributes": {},
        "scores": {"fraud": fraud},
    }


def ticket(subject: str, category: str = "general") -> dict[str, Any]:
    return {
        "event_id": "k",
        "customer_id": "acct-1",
        "channel": "email",
        "subject": subject,
        "body": "…",
        "customer_tier": "standard",
        "attributes": {},
        "scores": {"category": category, "category_confidence": 0.9},
    }


def window(
    name: str = "w",
    aggregate: Any = "count",
    of: str | None = None,
    within_s: float = 600.0,
    where: Where | None = None,
    source_type: str = "transaction",
    target_type: str = "transaction",
) -> WindowSpec:
    return WindowSpec(
        name=name,
        within_s=within_s,
        source_type=source_type,
        target_type=target_type,
        where=where,
        aggregate=aggregate,
        of=of,
        source=SourceRef("test.yaml", 1),
    )


def parse(text: str, event_type: str = "transaction") -> tuple[tuple[WindowSpec, ...], list[str]]:
    """``windows:`` of a YAML text read the way the loader reads rule files."""
    doc = yaml.load(textwrap.dedent(text), Loader=LineLoader)
    specs, problems = parse_windows(
        doc["windows"],
        file="tx.yaml",
        event_type=event_type,
        field_types=FIELD_TYPES,
        score_types=SCORE_TYPES,
        line=doc.key_lines["windows"],
    )
    assert all(isinstance(p, RuleProblem) for p in problems)
    return specs, [str(p) for p in problems]


ISSUE_WINDOWS = """\
windows:
  - name: countries_over_500_10m
    within: 10m
    where: {field: amount, gt: 500}
    distinct: country
  - name: password_resets_1h
    within: 1h
    from: ticket
    where:
      any:
        - {field: subject, matches: "(?i)password|locked out"}
        - {field: scores.category, eq: account}
    count: true
"""


# --- aggregates ------------------------------------------------------------------------


def test_count_counts_events_of_the_key_within_the_window() -> None:
    """count → how many events fed the window in (t - within, t], this one included."""
    store = WindowStore([window("n", "count")])
    assert store.observe_and_read("transaction", "a", at(0), tx()) == {"n": 1.0}
    assert store.observe_and_read("transaction", "a", at(10), tx()) == {"n": 2.0}
    assert store.observe_and_read("transaction", "a", at(599), tx()) == {"n": 3.0}


def test_sum_adds_the_numeric_field_and_skips_events_without_a_number() -> None:
    """sum → sum of the path; an event whose value is missing or not a number adds nothing."""
    store = WindowStore([window("total", "sum", of="amount")])
    store.observe_and_read("transaction", "a", at(0), tx(amount=100.5))
    store.observe_and_read("transaction", "a", at(1), {**tx(), "amount": "200.25"})
    store.observe_and_read("transaction", "a", at(2), {**tx(), "amount": "n/a"})
    assert store.observe_and_read("transaction", "a", at(3), tx(amount=1)) == {"total": 301.75}
    assert store.stats["entries"] == 3


def test_distinct_counts_different_values_once() -> None:
    """distinct → number of different values of the path in the window."""
    store = WindowStore([window("countries", "distinct", of="country")])
    for i, country in enumerate(["DE", "FR", "DE", "US"]):
        values = store.observe_and_read("transaction", "a", at(i), tx(country=country))
    assert values == {"countries": 3.0}


def test_max_returns_the_largest_value_or_zero_when_empty() -> None:
    """max → the largest value in the window; 0 when nothing is in it."""
    store = WindowStore([window("top", "max", of="scores.fraud", within_s=60)])
    store.observe_and_read("transaction", "a", at(0), tx(fraud=0.7))
    assert store.observe_and_read("transaction", "a", at(1), tx(fraud=0.2)) == {"top": 0.7}
    empty = WindowStore([window("top", "max", of="amount", where=_gt("amount", 1e6))])
    assert empty.observe_and_read("transaction", "a", at(0), tx()) == {"top": 0.0}


# --- event time --------------------------------------------------------------------------


def test_an_entry_exactly_within_old_no_longer_counts() -> None:
    """The window is (t - within, t]: 599.999 s old counts, exactly 600 s old does not."""
    store = WindowStore([window("n", "count", within_s=600)])
    store.observe_and_read("transaction", "a", at(0), tx())
    other = WindowStore([window("n", "count", within_s=600)])
    other.observe_and_read("transaction", "a", at(0), tx())
    assert store.observe_and_read("transaction", "a", at(599.999), tx()) == {"n": 2.0}
    assert other.observe_and_read("transaction", "a", at(600), tx()) == {"n": 1.0}


def test_expire_drops_old_entries_and_empty_keys() -> None:
    """expire(now) drops entries at or before now - within and keys left with nothing."""
    store = WindowStore([window("n", "count", within_s=60)])
    store.observe_and_read("transaction", "a", at(0), tx())
    store.observe_and_read("transaction", "b", at(30), tx())
    assert store.expire(at(60)) == 1
    assert store.stats == {"keys": 1, "entries": 1, "evicted_keys": 0, "truncated_entries": 0}
    assert store.expire(at(90)) == 1
    assert store.stats["keys"] == 0


def test_out_of_order_event_is_counted_at_its_own_time() -> None:
    """A late event lands at its occurred_at: it counts for later reads, not earlier ones."""
    store = WindowStore([window("n", "count", within_s=60)])
    store.observe_and_read("transaction", "a", at(100), tx())
    # Late by 90 s: its own read covers (-50, 10], where only itself lies.
    assert store.observe_and_read("transaction", "a", at(10), tx()) == {"n": 1.0}
    assert store.observe_and_read("transaction", "a", at(65), tx()) == {"n": 2.0}  # 10, 65
    assert store.observe_and_read("transaction", "a", at(101), tx()) == {"n": 3.0}  # 65-101


@pytest.mark.parametrize(("lateness_s", "seen"), [(0, 1.0), (60, 2.0)])
def test_allowed_lateness_keeps_what_a_late_event_still_reads(
    lateness_s: float, seen: float
) -> None:
    """Entries are trimmed at watermark - within - allowed_lateness, so an event that late
    still reads what lay before it; with no lateness it reads only what is left."""
    store = WindowStore([window("n", "count", within_s=600)], allowed_lateness_s=lateness_s)
    store.observe_and_read("transaction", "a", at(100), tx())
    store.observe_and_read("transaction", "a", at(700), tx())  # watermark 700
    # The late read covers (50, 650]: the entry at 100 and the event itself.
    assert store.observe_and_read("transaction", "a", at(650), tx()) == {"n": seen}


def test_a_key_behind_another_partition_in_event_time_keeps_its_history() -> None:
    """One key far ahead in event time (another partition, read first from a backlog)
    does not expire the history of a key that is behind: expiry is judged per key."""
    store = WindowStore([window("n", "count", within_s=600)], allowed_lateness_s=0)
    store.observe_and_read("transaction", "behind", at(0), tx())
    store.observe_and_read("transaction", "behind", at(60), tx())
    store.observe_and_read("transaction", "ahead", at(1800), tx())  # 30 minutes later
    assert store.observe_and_read("transaction", "behind", at(180), tx()) == {"n": 3.0}


def test_memory_stays_bounded_without_explicit_expire() -> None:
    """The store sweeps expired entries by itself as the watermark advances."""
    store = WindowStore([window("n", "count", within_s=60)], allowed_lateness_s=0)
    for i in range(50_000):
        store.observe_and_read("transaction", f"k{i % 500}", at(i), tx())
    # 10,000 observations between sweeps at most, plus one window of live entries.
    assert store.stats["entries"] <= 10_000 + 60
    assert store.stats["evicted_keys"] == 0


def test_naive_time_is_refused() -> None:
    """A time without a timezone cannot be placed on the event-time axis."""
    store = WindowStore([window()])
    with pytest.raises(ValueError, match="no timezone"):
        store.observe_and_read("transaction", "a", datetime(2026, 1, 1), tx())


# --- where ------------------------------------------------------------------------------


def _gt(path: str, value: float) -> WhereTest:
    return WhereTest(path, "gt", value)


def test_where_filters_which_events_feed_the_window() -> None:
    """Only events on which ``where`` holds are added (scores paths included)."""
    where = WhereAll((_gt("amount", 500), _gt("scores.fraud", 0.5)))
    store = WindowStore([window("risky", "count", where=where)])
    assert store.observe_and_read("transaction", "a", at(0), tx(600, fraud=0.9)) == {"risky": 1}
    assert store.observe_and_read("transaction", "a", at(1), tx(400, fraud=0.9)) == {"risky": 1}
    assert store.observe_and_read("transaction", "a", at(2), tx(600, fraud=0.1)) == {"risky": 1}


@pytest.mark.parametrize(
    ("where", "fact", "holds"),
    [
        (WhereTest("country", "in", ("FR", "ES")), tx(country="FR"), True),
        (WhereTest("country", "not_in", ("FR", "ES")), tx(country="FR"), False),
        (WhereTest("device.is_new", "eq", False), tx(), True),
        (WhereTest("device.kind", "ne", "mobile"), tx(), False),
        (WhereTest("amount", "lte", 100), tx(amount=100), True),
        (WhereTest("amount", "lt", 100), tx(amount=100), False),
        (WhereTest("attributes.vip", "exists", None), tx(), False),
        (WhereTest("attributes.vip", "missing", None), tx(), True),
        (WhereTest("merchant", "matches", "^Sh"), tx(), True),
        # A comparison on a missing field is unknown, and stays so under ``not``.
        (WhereNot(WhereTest("attributes.vip", "eq", "yes")), tx(), False),
        (WhereAny((WhereTest("attributes.vip", "eq", "y"), _gt("amount", 50))), tx(), True),
        # A value of the wrong kind counts as missing, as in the rules.
        (WhereTest("amount", "gt", 5), {**tx(), "amount": True}, False),
    ],
)
def test_where_operators_follow_the_rule_semantics(
    where: Where, fact: dict[str, Any], holds: bool
) -> None:
    """Each operator, all/any/not, and missing-field logic behave as in rule conditions."""
    assert where_holds(where, fact) is holds


# --- keys, types and bounds --------------------------------------------------------------


def test_keys_are_isolated() -> None:
    """One key's events never show in another key's window."""
    store = WindowStore([window("n", "count")])
    store.observe_and_read("transaction", "a", at(0), tx())
    store.observe_and_read("transaction", "a", at(1), tx())
    assert store.observe_and_read("transaction", "b", at(2), tx()) == {"n": 1.0}


def test_cross_type_window_is_fed_by_one_type_and_read_by_another() -> None:
    """A ``from: ticket`` window on the transaction ruleset: tickets add, transactions read."""
    spec = window("resets", "count", within_s=3600, source_type="ticket")
    store = WindowStore([spec])
    assert store.observe_and_read("ticket", "acct-1", at(0), ticket("reset")) == {}
    assert store.observe_and_read("transaction", "acct-1", at(5), tx()) == {"resets": 1.0}
    assert store.observe_and_read("transaction", "acct-2", at(5), tx()) == {"resets": 0.0}


def test_max_entries_per_key_drops_the_oldest_and_counts_them() -> None:
    """A key keeps at most max_entries_per_key entries per window; the oldest go first."""
    store = WindowStore([window("total", "sum", of="amount")], max_entries_per_key=3)
    for i, amount in enumerate([1, 2, 3, 4, 5]):
        values = store.observe_and_read("transaction", "a", at(i), tx(amount=amount))
    assert values == {"total": 12.0}
    assert store.stats == {"keys": 1, "entries": 3, "evicted_keys": 0, "truncated_entries": 2}


def test_max_keys_evicts_the_least_recently_updated_key() -> None:
    """Past max_keys the key updated longest ago is dropped whole and counted."""
    store = WindowStore([window("n", "count")], max_keys=2)
    store.observe_and_read("transaction", "a", at(0), tx())
    store.observe_and_read("transaction", "b", at(1), tx())
    store.observe_and_read("transaction", "a", at(2), tx())  # 'b' is now the oldest
    store.observe_and_read("transaction", "c", at(3), tx())
    assert store.stats == {"keys": 2, "entries": 3, "evicted_keys": 1, "truncated_entries": 0}
    assert store.observe_and_read("transaction", "b", at(4), tx()) == {"n": 1.0}
    assert store.observe_and_read("transaction", "c", at(5), tx()) == {"n": 2.0}


# --- reloads and replay ------------------------------------------------------------------


def test_reconfigure_keeps_unchanged_state_drops_removed_and_returns_new() -> None:
    """State follows the fingerprint: same meaning keeps it, a changed window starts empty."""
    kept, removed = window("kept", "count"), window("removed", "count")
    store = WindowStore([kept, removed])
    store.observe_and_read("transaction", "a", at(0), tx())
    moved = WindowSpec(**{**kept.__dict__, "source": SourceRef("other.yaml", 40)})
    changed = window("removed", "count", within_s=1200)
    assert store.reconfigure([moved, changed]) == [changed]
    assert store.stats["entries"] == 1
    assert store.observe_and_read("transaction", "a", at(1), tx()) == {"kept": 2, "removed": 1}


def test_replay_only_seeds_the_windows_it_is_given() -> None:
    """After a reload, replaying history into the new windows leaves kept ones as they were."""
    old = window("old", "count")
    store = WindowStore([old])
    history = [("transaction", "a", at(i), tx()) for i in range(3)]
    assert store.replay(history) == 3
    new = window("new", "sum", of="amount")
    assert store.reconfigure([old, new]) == [new]
    store.replay(history, only=[new])
    assert store.observe_and_read("transaction", "a", at(4), tx()) == {"old": 4, "new": 400}
    assert store.horizon_s == 600


def test_fingerprint_follows_meaning_not_location() -> None:
    """Moving a window in its file keeps the fingerprint; changing what it means does not."""
    spec = window("w", "count", where=_gt("amount", 5))
    moved = WindowSpec(**{**spec.__dict__, "source": SourceRef("b.yaml", 99)})
    assert moved.fingerprint == spec.fingerprint
    assert window("w", "count", where=_gt("amount", 6)).fingerprint != spec.fingerprint
    assert window("w", "count", within_s=601).fingerprint != spec.fingerprint


def test_duplicate_names_per_target_are_refused_by_the_store() -> None:
    """The store refuses two windows one ruleset would read under the same name."""
    with pytest.raises(ValueError, match="twice"):
        WindowStore([window("w"), window("w", within_s=60)])


# --- parsing -------------------------------------------------------------------------------


def test_issue_windows_parse_into_specs_with_their_lines() -> None:
    """The two issue examples parse; each spec remembers where it was written."""
    specs, problems = parse(ISSUE_WINDOWS)
    assert problems == []
    countries, resets = specs
    assert countries.within_s == 600
    assert (countries.source_type, countries.target_type) == ("transaction", "transaction")
    assert (countries.aggregate, countries.of) == ("distinct", "country")
    assert countries.where == WhereTest("amount", "gt", 500)
    assert countries.source == SourceRef("tx.yaml", 2)
    assert (resets.source_type, resets.aggregate, resets.within_s) == ("ticket", "count", 3600)
    assert isinstance(resets.where, WhereAny)
    assert window_field_types(specs, "transaction") == {
        "windows.countries_over_500_10m": "number",
        "windows.password_resets_1h": "number",
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "  - {name: w, within: 10m, distinct: countyr}\n",
            ["tx.yaml:2: window 'w': unknown field 'countyr'", "did you mean 'country'?"],
        ),
        (
            "  - name: w\n    within: 10m\n    where: {field: scores.fruad, gt: 0.5}\n"
            "    count: true\n",
            ["tx.yaml:4: window 'w': unknown score 'scores.fruad'", "'scores.fraud'?"],
        ),
        (
            "  - name: w\n    within: 1h\n    from: tickets\n    count: true\n",
            ["tx.yaml:4: window 'w': unknown event type 'tickets'", "did you mean 'ticket'?"],
        ),
        (
            "  - name: w\n    within: 600\n    count: true\n",
            ["tx.yaml:3: window 'w': 'within: 600'", "write '600s'"],
        ),
        (
            "  - name: w\n    within: 8d\n    count: true\n",
            ["tx.yaml:3: window 'w'", "at most 7d"],
        ),
        (
            "  - name: w\n    within: 10m\n    count: true\n    sum: amount\n",
            ["tx.yaml:5: window 'w': has 2 aggregates (count, sum)", "keep exactly one"],
        ),
        (
            "  - name: w\n    within: 10m\n    sum: country\n",
            ["tx.yaml:4: window 'w': 'sum' needs a number field", "'distinct: country'"],
        ),
        (
            "  - name: w\n    within: 10m\n",
            ["tx.yaml:2: window 'w': needs one aggregate", "'count: true'"],
        ),
        (
            "  - name: Big-Spenders\n    within: 10m\n    count: true\n",
            ["tx.yaml:2: window #1: the name 'Big-Spenders'", "e.g. 'big_spenders'"],
        ),
        (
            "  - name: w\n    within: 10m\n    count: true\n    wher: {field: amount, gt: 1}\n",
            ["tx.yaml:5: window 'w': unknown key 'wher'", "did you mean 'where'?"],
        ),
        (
            "  - name: w\n    within: 10m\n    where: {field: country, gt: 5}\n    count: true\n",
            ["tx.yaml:4: window 'w': 'country' (string) 'gt'", "compares numbers"],
        ),
        (
            "  - name: w\n    within: 10m\n    where: {field: merchant, matches: '(unclosed'}\n"
            "    count: true\n",
            ["tx.yaml:4: window 'w': '(unclosed' is not a valid regular expression"],
        ),
        (
            "  - {name: w, within: 10m, count: true}\n  - {name: w, within: 1h, count: true}\n",
            ["tx.yaml:3: window 'w' is declared twice (first at tx.yaml:2)", "rename one"],
        ),
        (
            "  - just text\n",
            ["tx.yaml:1: window #1: is the string 'just text', not a mapping"],
        ),
    ],
)
def test_each_parse_problem_names_line_window_and_fix(body: str, expected: list[str]) -> None:
    """Every mistake is reported once, with file:line, the window and how to fix it."""
    specs, problems = parse("windows:\n" + body)
    assert len(problems) == 1, problems
    for part in expected:
        assert part in problems[0]
    assert len(specs) <= 1  # a bad window is left out; of duplicates the first stays


def test_where_on_a_cross_type_window_is_checked_against_the_source_type() -> None:
    """``from: ticket`` windows check their fields against the ticket schema."""
    _, problems = parse(
        "windows:\n  - name: w\n    within: 1h\n    from: ticket\n"
        "    where: {field: amount, gt: 1}\n    count: true\n"
    )
    assert len(problems) == 1
    assert "unknown field 'amount' for ticket events" in problems[0]


def test_windows_must_be_a_list() -> None:
    """A mapping under ``windows:`` is refused at the key's line."""
    _, problems = parse("windows: {name: w}\n")
    assert problems == [
        "tx.yaml:1: 'windows' must be a list of windows (each starting with '- name: ...'), "
        "not a mapping"
    ]


# --- the issue's two examples, end to end ------------------------------------------------


def _store() -> WindowStore:
    specs, problems = parse(ISSUE_WINDOWS)
    assert problems == []
    return WindowStore(specs)


def test_three_transactions_over_500_from_different_countries_within_10_minutes() -> None:
    """distinct countries of amount > 500 per account: DE, FR, US in 10 min reach 3."""
    store = _store()
    read = store.observe_and_read
    assert read("transaction", "acct-1", at(0), tx(900, "DE"))["countries_over_500_10m"] == 1
    assert read("transaction", "acct-1", at(60), tx(50, "ES"))["countries_over_500_10m"] == 1
    assert read("transaction", "acct-1", at(120), tx(700, "DE"))["countries_over_500_10m"] == 1
    assert read("transaction", "acct-1", at(300), tx(800, "FR"))["countries_over_500_10m"] == 2
    assert read("transaction", "acct-1", at(540), tx(600, "US"))["countries_over_500_10m"] == 3
    # Ten minutes after the first DE one, the later DE one still keeps DE in.
    assert read("transaction", "acct-1", at(601), tx(10, "GB"))["countries_over_500_10m"] == 3
    # Another account is untouched.
    assert read("transaction", "acct-2", at(601), tx(900, "IT"))["countries_over_500_10m"] == 1


def test_password_reset_ticket_followed_by_a_large_transfer_within_an_hour() -> None:
    """A password-reset ticket makes the account's next hour of transfers read resets ≥ 1."""
    store = _store()

    def flagged(seconds: float, amount: float, key: str = "acct-1") -> bool:
        values = store.observe_and_read("transaction", key, at(seconds), tx(amount))
        return values["password_resets_1h"] >= 1 and amount > 2000  # the rule's condition

    assert not flagged(0, 5000)  # no ticket yet
    store.observe_and_read("ticket", "acct-1", at(10), ticket("Help, I am locked out"))
    store.observe_and_read("ticket", "acct-1", at(20), ticket("Invoice question"))
    store.observe_and_read("ticket", "acct-9", at(30), ticket("x", category="account"))
    assert not flagged(100, 150)  # small
    assert flagged(200, 2500)
    assert flagged(3609, 9000)  # 59:59 after the ticket
    assert not flagged(3610, 9000)  # exactly 1 h later: out
    assert flagged(40, 3000, key="acct-9")  # scores.category = account counts too
