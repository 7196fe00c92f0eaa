"""The authoring tools: ``arbiter rules test`` (rule-file tests, diff, coverage) and
``arbiter rules backtest`` (candidate rules replayed over a real SQLite ledger, read-only)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.ops.backtest import BacktestRequest, run_backtest
from app.rules.authoring.backtest import compare
from app.rules.authoring.testing import run_rule_tests
from app.rules.loader import check_rules
from app.rules.runtime.result import RuleResult
from app.settings import Settings
from app.simulator.generate import training_set
from app.simulator.shapes import EVENT_MODELS
from app.store import migrate
from app.store.db import create_engine
from app.store.ledger import Ledger
from app.values import DecidedEvent, DecisionRecord
from app.wiring import rule_vocabulary
from tests.harness import arbiter
from tests.shipped import TYPES

REPO = Path(__file__).resolve().parent.parent
VOCABULARY = rule_vocabulary(Settings())
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

ORDER = "ruleset: order\ndefault: {decision: accept, reason: Fine.}\n"
TICKET = "ruleset: ticket\ndefault: {decision: route_general, reason: General.}\n"
# Decline at 0.9 (what the ledger's decisions were made with) ...
OLD_TRANSACTION = """\
ruleset: transaction
default: {decision: approve, reason: No risk signal matched.}
rules:
  - name: decline_fraud
    when: {field: scores.fraud, gte: 0.9}
    decision: decline
    reason: "Fraud score {scores.fraud:.2f}."
"""
# ... and the candidate: decline from 0.5, plus a count window over the last hour.
CANDIDATE_TRANSACTION = """\
ruleset: transaction
default: {decision: approve, reason: No risk signal matched.}
windows:
  - name: payments_1h
    within: 1h
    count: true
rules:
  - name: decline_fraud
    when: {field: scores.fraud, gte: 0.5}
    decision: decline
    reason: "Fraud score {scores.fraud:.2f}."
  - name: review_busy_account
    when: {field: windows.payments_1h, gte: 2}
    decision: review
    reason: "{windows.payments_1h:.0f} payments in an hour."
"""


def clean_env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    return {**base, "ARBITER_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "240"}


def rules_folder(base: Path, transaction: str, *, name: str = "rules") -> Path:
    folder = base / name
    folder.mkdir()
    (folder / "order.yaml").write_text(ORDER)
    (folder / "ticket.yaml").write_text(TICKET)
    (folder / "transaction.yaml").write_text(transaction)
    return folder


# --- arbiter rules test -------------------------------------------------------------------


def test_the_shipped_declarations_examples_are_valid_events() -> None:
    """Every shipped type's ``example`` passes its own schema (rule tests merge onto it)."""
    for event_type in TYPES.names:
        example = TYPES.spec(event_type).example
        assert example is not None, event_type
        TYPES.models[event_type].model_validate(example)


def test_shipped_rule_tests_pass_and_cover_every_rule(tmp_path: Path) -> None:
    """`arbiter rules test` on the repository's rules/: exit 0, every rule exercised."""
    result = arbiter(
        "rules", "test", "--dir", str(REPO / "rules"), env=clean_env(tmp_path), cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✗" not in result.stdout
    for event_type in ("order", "ticket", "transaction"):
        assert f"{event_type}: " in result.stdout
    report = run_rule_tests(REPO / "rules", *VOCABULARY, TYPES)
    assert report.ok
    assert {c.test.event_type for c in report.results} == {"order", "ticket", "transaction"}
    assert all(
        len([c for c in report.results if c.test.event_type == t]) >= 3 for t in EVENT_MODELS
    )
    assert all(not c.not_exercised for c in report.coverage)


def test_failing_test_shows_a_diff_and_exits_1(tmp_path: Path) -> None:
    """A wrong expectation: ✗ with file:line, expected vs actual decision, rules and actions."""
    rules = rules_folder(
        tmp_path,
        OLD_TRANSACTION
        + """\
tests:
  - name: a high score is declined
    scores: {fraud: 0.95}
    expect: {decision: decline, rules_fired: [decline_fraud]}
  - name: wrongly expects a decline
    scores: {fraud: 0.3}
    expect:
      decision: decline
      rules_fired: [decline_fraud]
      actions: [{publish: fraud-alerts}]
""",
    )
    result = arbiter("rules", "test", "--dir", str(rules), env=clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert f"✓ {rules / 'transaction.yaml'}:9 a high score is declined" in out
    assert f"✗ {rules / 'transaction.yaml'}:12 wrongly expects a decline" in out
    assert "- expected: decline" in out
    assert "+ actual:   approve" in out
    assert "- expected: [decline_fraud]" in out
    assert "+ actual:   []" in out
    assert "publish: fraud-alerts (missing)" in out
    assert "reasons: No risk signal matched." in out
    assert "1 passed, 1 failed" in out


def test_coverage_line_lists_rules_no_test_exercises(tmp_path: Path) -> None:
    """The coverage line names the rules no test made fire."""
    text = (
        OLD_TRANSACTION
        + """\
  - name: review_online
    when: {field: channel, eq: online}
    decision: review
    reason: Online.
tests:
  - name: approve by default
    expect: {decision: approve}
"""
    )
    rules = rules_folder(tmp_path, text)
    result = arbiter("rules", "test", "--dir", str(rules), env=clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "transaction: 0/2 rules exercised; not exercised: decline_fraud, review_online" in (
        result.stdout
    )
    assert "order: 0/0 rules exercised" in result.stdout


def test_invalid_test_event_names_the_field(tmp_path: Path) -> None:
    """A test event the schema refuses is a test error naming the field; nothing crashes."""
    rules = rules_folder(
        tmp_path,
        OLD_TRANSACTION
        + """\
tests:
  - name: a bad event
    event: {device: {is_new: maybe}, amount: -5}
    expect: {decision: approve}
  - name: a typo in a field
    event: {amout: 5}
    expect: {decision: approve}
  - name: an unknown score
    scores: {frued: 0.5}
    expect: {decision: approve}
""",
    )
    report = run_rule_tests(rules, *VOCABULARY, TYPES)
    assert not report.ok
    errors = [c.error or "" for c in report.results]
    assert "field 'device.is_new'" in errors[0]
    assert "field 'amount'" in errors[0]
    assert "field 'amout'" in errors[1]
    assert "not a field of transaction events" in errors[1]
    assert "unknown score 'frued'" in errors[2]
    assert "did you mean 'fraud'" in errors[2]
    result = arbiter("rules", "test", "--dir", str(rules), env=clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "invalid test event: field 'amount'" in result.stdout
    assert "field 'device.is_new'" in result.stdout


def test_badly_written_test_and_broken_rules_are_problems(tmp_path: Path) -> None:
    """A test without `expect` and a rule-file error are printed like `rules check`: exit 1."""
    rules = rules_folder(
        tmp_path,
        OLD_TRANSACTION
        + """\
  - name: broken
    when: {field: amount, gt: lots}
    decision: review
    reason: x
tests:
  - name: forgot the expectation
    scores: {fraud: 0.95}
""",
    )
    report = run_rule_tests(rules, *VOCABULARY, TYPES)
    messages = [str(p) for p in report.problems]
    assert any("rule 'broken'" in m for m in messages)
    assert any("test 'forgot the expectation': needs 'expect:'" in m for m in messages)
    result = arbiter("rules", "test", "--dir", str(rules), env=clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "rule 'broken'" in result.stderr


def test_windows_actions_and_tags_expectations(tmp_path: Path) -> None:
    """Window values feed windows.<name>; actions and tags are subset checks."""
    rules = rules_folder(
        tmp_path,
        CANDIDATE_TRANSACTION.replace(
            'reason: "{windows',
            'actions: [{tag: [busy, hot]}, {set: {queue: q1}}]\n    reason: "{windows',
        )
        + """\
tests:
  - name: busy
    windows: {payments_1h: 2}
    expect:
      decision: review
      reason_not_a_key: x
""",
    )
    report = run_rule_tests(rules, *VOCABULARY, TYPES)
    assert any("unknown key 'reason_not_a_key'" in str(p) for p in report.problems)
    text = (
        (rules / "transaction.yaml")
        .read_text()
        .replace(
            "      reason_not_a_key: x\n",
            "      tags: [hot]\n      actions: [{set: {queue: q1}}, {tag: busy}]\n",
        )
    )
    (rules / "transaction.yaml").write_text(text)
    report = run_rule_tests(rules, *VOCABULARY, TYPES)
    assert report.ok, [(c.error, c.differences) for c in report.results]
    assert report.results[0].result is not None
    assert report.results[0].result.reasons == ("2 payments in an hour.",)


# --- backtest: the pure comparison ---------------------------------------------------------


def decided(event_id: str, decision: str, fired: tuple[str, ...], at: datetime) -> DecidedEvent:
    return DecidedEvent(
        "transaction", "acct-1", at, {"event_id": event_id}, {}, decision, fired, "v1"
    )


def test_compare_counts_transitions_rule_shifts_and_samples() -> None:
    """Pure: counts per old→new, rules that fired more/less, at most N samples per change."""
    events = [
        decided("e1", "approve", (), T0),
        decided("e2", "approve", (), T0),
        decided("e3", "approve", (), T0),
        decided("e4", "decline", ("old_rule",), T0),
    ]
    results = [
        RuleResult("review", "new_rule", "r", ("new_rule",), ("because",)),
        RuleResult("review", "new_rule", "r", ("new_rule",), ("because",)),
        RuleResult("approve", None, "d", (), ("d",)),
        RuleResult("decline", "new_rule", "r", ("new_rule",), ("because",)),
    ]
    report = compare(events, results, samples=1)
    (part,) = report.by_type
    assert part.transitions == {
        ("approve", "approve"): 1,
        ("approve", "review"): 2,
        ("decline", "decline"): 1,
    }
    assert part.changed == 2
    assert {(s.rule, s.old, s.new) for s in part.rule_shifts} == {
        ("new_rule", 0, 3),
        ("old_rule", 1, 0),
    }
    (sample,) = part.samples[("approve", "review")]
    assert sample.event_id == "e1"
    assert sample.new_reasons == ("because",)
    assert report.outcomes is None


# --- backtest: a real SQLite ledger ---------------------------------------------------------


def record(event: Any, fraud: float, decision: str, fired: list[str]) -> DecisionRecord:
    payload = event.model_dump(mode="json")
    return DecisionRecord(
        event_id=event.event_id,
        event_type="transaction",
        partition_key=event.partition_key,
        decision=decision,
        actions=[],
        scores={"fraud": fraud},
        model_versions={"transaction.fraud": "v1"},
        rules_fired=fired,
        reasons=[],
        payload=payload,
        latency_ms=1.0,
        occurred_at=event.occurred_at,
        decided_at=event.occurred_at,
        source_topic="events.transaction",
        source_partition=0,
        source_offset=0,
        ruleset_version="old",
    )


async def build_ledger(url: str) -> None:
    """Ten transactions of distinct accounts, 10 minutes apart from T0, decided by the
    old rules; the first one (T0 - 30 min) shares its account with the second."""
    await migrate.upgrade(url)
    events, _ = training_set("transaction", 10, seed=5)
    frauds = [0.1, 0.55, 0.95, 0.3, 0.7, 0.2, 0.05, 0.6, 0.92, 0.15]
    records = []
    for index, (event, fraud) in enumerate(zip(events, frauds, strict=True)):
        at = T0 - timedelta(minutes=30) if index == 0 else T0 + timedelta(minutes=10 * index)
        account = "acct-shared" if index < 2 else f"acct-{index:05d}"
        stored = event.model_copy(
            update={"event_id": f"txn-{index}", "occurred_at": at, "account_id": account}
        )
        old = "decline" if fraud >= 0.9 else "approve"
        records.append(record(stored, fraud, old, ["decline_fraud"] if old == "decline" else []))
    engine = create_engine(url)
    try:
        await Ledger(engine).record(records, [])
    finally:
        await engine.dispose()


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "arbiter.db"
    asyncio.run(build_ledger(f"sqlite+aiosqlite:///{path}"))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.sqlite
def test_backtest_on_a_real_ledger_counts_changes_and_never_writes(
    tmp_path: Path, ledger_file: Path
) -> None:
    """Candidate rules (decline from 0.5, review a busy account) over the ledger since T0:
    the event before T0 only seeds the window; the ledger file is byte-for-byte unchanged."""
    before = digest(ledger_file)
    files_before = sorted(p.name for p in ledger_file.parent.iterdir())
    rules = rules_folder(tmp_path, CANDIDATE_TRANSACTION, name="candidate")
    rulesets, problems = check_rules(rules, *VOCABULARY)
    assert problems == []
    request = BacktestRequest(f"sqlite+aiosqlite:///{ledger_file}", since=T0, samples=2)
    report = asyncio.run(run_backtest(request, rulesets))
    assert report.seeded == 1
    assert report.events == 9
    (part,) = report.by_type
    # Scores since T0: 0.55 0.95 0.3 0.7 0.2 0.05 0.6 0.92 0.15; txn-1 shares its account
    # with the seeded txn-0 (40 minutes earlier), so the window reads 2 for it.
    assert part.transitions == {
        ("approve", "approve"): 4,
        ("approve", "decline"): 3,
        ("decline", "decline"): 2,
    }
    assert [s.event_id for s in part.samples[("approve", "decline")]] == ["txn-1", "txn-4"]
    assert {(s.rule, s.old, s.new) for s in part.rule_shifts} == {("decline_fraud", 2, 5)}
    assert digest(ledger_file) == before
    # A read-only SQLite reader of a WAL database may leave SQLite's shared-memory index
    # and an empty -wal file next to it; no page was written.
    extra = {p.name for p in ledger_file.parent.iterdir()} - set(files_before)
    assert extra <= {"arbiter.db-shm", "arbiter.db-wal"}
    wal = ledger_file.with_name("arbiter.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0


@pytest.mark.sqlite
def test_backtest_window_seeding_changes_a_decision(tmp_path: Path, ledger_file: Path) -> None:
    """With the fraud rule unchanged, only the seeded window changes txn-1 (approve→review)."""
    candidate = CANDIDATE_TRANSACTION.replace("gte: 0.5", "gte: 0.9")
    rulesets, problems = check_rules(rules_folder(tmp_path, candidate, name="c"), *VOCABULARY)
    assert problems == []
    url = f"sqlite+aiosqlite:///{ledger_file}"
    report = asyncio.run(run_backtest(BacktestRequest(url, since=T0), rulesets))
    (part,) = report.by_type
    assert part.changed == 1
    (sample,) = part.samples[("approve", "review")]
    assert sample.event_id == "txn-1"
    assert sample.new_reasons == ("2 payments in an hour.",)
    later = asyncio.run(
        run_backtest(
            BacktestRequest(url, since=T0 + timedelta(minutes=5), until=T0 + timedelta(minutes=25)),
            rulesets,
        )
    )
    assert later.events == 2  # txn-1 and txn-2; txn-3 at exactly `until` is left out
    assert later.seeded == 1


@pytest.mark.sqlite
def test_backtest_cli_prints_the_report(tmp_path: Path, ledger_file: Path) -> None:
    """The CLI: old→new table, rule shifts, samples, the outcome line; ledger unchanged."""
    before = digest(ledger_file)
    rules = rules_folder(tmp_path, CANDIDATE_TRANSACTION, name="candidate")
    env = {**clean_env(tmp_path), "ARBITER_DATA_DIR": str(ledger_file.parent)}
    result = arbiter(
        "rules",
        "backtest",
        "--since",
        T0.isoformat(),
        "--rules",
        str(rules),
        "--type",
        "transaction",
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "9 events replayed, 3 decisions would change" in out
    assert "approve → decline, e.g.:" in out
    assert "txn-1 (was default; now decline_fraud)" in out
    assert "+3" in out
    assert "outcome effect: no outcomes recorded yet" in out
    assert digest(ledger_file) == before


def test_backtest_cli_refuses_broken_candidate_rules(tmp_path: Path) -> None:
    """Candidate rules that fail check: exit 2 with the problems; the ledger is not opened."""
    rules = rules_folder(tmp_path, OLD_TRANSACTION.replace("gte: 0.9", "gte: high"))
    result = arbiter(
        "rules",
        "backtest",
        "--since",
        "2026-03-01",
        "--rules",
        str(rules),
        env=clean_env(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "transaction.yaml" in result.stderr
    assert "rule 'decline_fraud'" in result.stderr
    assert not (tmp_path / "data").exists()


def test_backtest_cli_without_a_ledger_says_so(tmp_path: Path) -> None:
    """No ledger file: exit 2 naming the path; no empty database is created."""
    result = arbiter(
        "rules",
        "backtest",
        "--since",
        "2026-03-01",
        "--rules",
        str(REPO / "rules"),
        env=clean_env(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no ledger at" in result.stderr
    assert not (tmp_path / "data" / "arbiter.db").exists()


def test_shipped_rules_copy_is_untouched_by_tests(tmp_path: Path) -> None:
    """Running the shipped tests from a copy works the same (no dependence on cwd)."""
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "rules", copy)
    assert run_rule_tests(copy, *VOCABULARY, TYPES).ok
