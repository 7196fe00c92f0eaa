"""The pure decision core runs a batch through the real first models and the shipped rules
with no broker and no database (``app.core.offline.run_batch``)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from app.core.offline import InMemoryWindows, as_records, run_batch
from app.inference.loading import scorer_from_folder
from app.inference.scoring import Scorer
from app.rules.language.spec import RuleSet
from app.rules.loader import load_rulesets
from app.rules.runtime.engine import RulesEngine
from app.simulator.generate import generate
from app.simulator.shapes import EVENT_MODELS, field_types
from app.values import InRecord
from tests.shipped import SCORE_TYPES, TYPES

RULES = Path(__file__).resolve().parent.parent / "rules"


@pytest.fixture(scope="module")
def scorer(trained_models: Path) -> Scorer:
    return scorer_from_folder(trained_models)


@pytest.fixture(scope="module")
def rulesets() -> dict[str, RuleSet]:
    return load_rulesets(RULES, {t: field_types(t) for t in EVENT_MODELS}, SCORE_TYPES)


@pytest.fixture(scope="module")
def rules(rulesets: dict[str, RuleSet]) -> RulesEngine:
    return RulesEngine(rulesets)


def simulated(n: int, seed: int) -> tuple[list[InRecord], dict[str, str | None]]:
    """``n`` simulator events as consumed records, and the expected reject reason by offset."""
    records, expected = [], {}
    for offset, sim in enumerate(generate(n, seed=seed, malformed_rate=0.05)):
        records.append(
            InRecord(sim.event_type, f"events.{sim.event_type}", 0, offset, sim.key, sim.value, 0)
        )
        expected[f"{sim.event_type}:{offset}"] = sim.malformed
    return records, expected


def test_a_mixed_batch_gets_one_decision_per_valid_event_and_a_reason_per_reject(
    scorer: Scorer, rules: RulesEngine, rulesets: dict[str, RuleSet]
) -> None:
    """Every valid event is decided once with its type's scores and the ruleset version;
    every broken one is rejected with the reason the simulator planted."""
    records, expected = simulated(400, seed=11)
    out = run_batch(
        records,
        scorer=scorer,
        rules=rules,
        event_models=TYPES.models,
        windows=InMemoryWindows(rulesets),
    )

    rejected = {f"{r.record.event_type}:{r.record.offset}": r.error.reason for r in out.rejected}
    assert rejected == {k: v for k, v in expected.items() if v is not None}
    assert len(out.decisions) == sum(1 for v in expected.values() if v is None) - out.repeats
    assert len({d.event_id for d in out.decisions}) == len(out.decisions)
    for decision in out.decisions:
        assert set(decision.scores) >= set(SCORE_TYPES[decision.event_type])
        assert decision.ruleset_version == rulesets[decision.event_type].version
        assert decision.rules_fired or decision.reasons
    assert Counter(d.event_type for d in out.decisions).keys() == {"order", "ticket", "transaction"}


def test_messages_are_decisions_in_record_order_then_dead_letters(
    scorer: Scorer, rules: RulesEngine
) -> None:
    """What would be published: each decision on decisions.<type> (and its publish actions'
    topics) keyed by its partition key, in the order the events came in; then every reject
    on dlq.<type> with its original bytes."""
    records, _ = simulated(200, seed=12)
    out = run_batch(records, scorer=scorer, rules=rules, event_models=TYPES.models)

    decided = {d.event_id: d for d in out.decisions}
    decision_msgs = [m for m in out.messages if not m.topic.startswith("dlq.")]
    ids_in_order = list(dict.fromkeys(json.loads(m.value)["event_id"] for m in decision_msgs))
    by_offset = sorted(out.decided, key=lambda d: d.item.record.offset)
    assert ids_in_order == [d.decision.event_id for d in by_offset]
    for message in decision_msgs:
        decision = decided[json.loads(message.value)["event_id"]]
        assert message.key == decision.partition_key.encode()
    dlq = out.messages[len(decision_msgs) :]
    assert all(m.topic.startswith("dlq.") for m in dlq)
    assert [m.value for m in dlq] == [r.record.value for r in out.rejected]


def test_a_repeated_event_in_one_batch_is_decided_once(scorer: Scorer, rules: RulesEngine) -> None:
    """A redelivered copy inside the batch is counted as a repeat, not decided again."""
    records, expected = simulated(30, seed=13)
    valid = next(r for r in records if expected[f"{r.event_type}:{r.offset}"] is None)
    out = run_batch([*records, valid], scorer=scorer, rules=rules, event_models=TYPES.models)
    assert out.repeats == 1
    event_id = json.loads(valid.value)["event_id"]
    assert [d.event_id for d in out.decisions].count(event_id) == 1


TICKET = {
    "event_id": "tkt-1",
    "occurred_at": "2026-03-01T02:00:00Z",
    "customer_id": "acct-00193",
    "channel": "email",
    "subject": "Locked out of my account, password reset please",
    "body": "I cannot log in since this morning, please reset my password.",
    "customer_tier": "standard",
}
PAYMENT = {
    "event_id": "txn-1",
    "occurred_at": "2026-03-01T02:20:00Z",
    "account_id": "acct-00193",
    "amount": 2600.00,
    "currency": "EUR",
    "merchant": "FreshMart",
    "merchant_category": "grocery",
    "channel": "card_present",
    "country": "DE",
    "card_country": "DE",
    "device": {"device_id": "d-1", "kind": "pos", "is_new": False},
}


@pytest.mark.parametrize("ticket_first", [True, False])
def test_windows_see_the_batch_in_record_order_across_types(
    scorer: Scorer, rules: RulesEngine, rulesets: dict[str, RuleSet], ticket_first: bool
) -> None:
    """A password-reset ticket, then a large payment of the same customer in one batch:
    the payment's rules see the ticket through the window; in the other order they do not."""
    ticket = as_records("ticket", [json.dumps(TICKET)])[0]
    payment = as_records("transaction", [json.dumps(PAYMENT)])[0]
    batch = [ticket, payment] if ticket_first else [payment, ticket]
    out = run_batch(
        batch,
        scorer=scorer,
        rules=rules,
        event_models=TYPES.models,
        windows=InMemoryWindows(rulesets),
    )
    assert not out.rejected
    (decision,) = [d for d in out.decisions if d.event_type == "transaction"]
    fired = "review_large_payment_after_password_reset" in decision.rules_fired
    assert fired is ticket_first
