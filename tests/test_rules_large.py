"""Large rulesets: durable_rules' C engine overflows its evaluation stack (error 303) on
some events once one ruleset holds several hundred rules, so the engine registers rules
in chunks. A thousand rules must decide like a plain reading of them, in both modes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from app.rules.loader import load_rulesets
from app.rules.runtime.engine import CHUNK_RULES, RulesEngine
from app.simulator.shapes import EVENT_MODELS, field_types
from tests.shipped import SCORE_TYPES

FIELDS = {t: field_types(t) for t in EVENT_MODELS}
RULES = 1000


def _ruleset_file(folder: Path, mode: str) -> None:
    lines = [
        "ruleset: transaction",
        f"mode: {mode}",
        "default: {decision: approve, reason: Nothing matched.}",
        "rules:",
    ]
    for i in range(RULES):
        # Rule i: an amount over 10*i at a given channel; higher thresholds first.
        channel = ("online", "card_present")[i % 2]
        lines += [
            f"  - name: over_{i}",
            f"    priority: {i}",
            "    when:",
            "      all:",
            f"        - {{field: amount, gt: {10 * i}}}",
            f"        - {{field: channel, eq: {channel}}}",
            "        - any:",
            "            - {field: device.is_new, eq: true}",
            "            - {field: scores.fraud, gte: 0.5}",
            f"    decision: band_{i}",
        ]
    folder.mkdir()
    (folder / "transaction.yaml").write_text("\n".join(lines) + "\n")


def _expected(fact: dict[str, object]) -> list[int]:
    amount = float(fact["amount"])  # type: ignore[arg-type]
    risky = fact["device"]["is_new"] or fact["scores"]["fraud"] >= 0.5  # type: ignore[index]
    channel = fact["channel"]
    matching = [
        i
        for i in range(RULES)
        if amount > 10 * i and channel == ("online", "card_present")[i % 2] and risky
    ]
    return sorted(matching, reverse=True)


@pytest.mark.parametrize("mode", ["stop", "collect"])
def test_a_thousand_rules_decide_like_a_plain_reading_of_them(tmp_path: Path, mode: str) -> None:
    """Every event gets the rule a direct evaluation picks (stop) or every matching rule in
    priority order (collect); none fails inside durable."""
    assert RULES > 5 * CHUNK_RULES
    _ruleset_file(tmp_path / "rules", mode)
    rulesets = load_rulesets(
        tmp_path / "rules", {"transaction": FIELDS["transaction"]}, SCORE_TYPES
    )
    engine = RulesEngine(rulesets)
    rng = random.Random(3)
    facts = [
        {
            "amount": rng.choice([5.0, 95.0, 2505.0, 6000.0, 9999.0, 12000.0]),
            "channel": rng.choice(["online", "card_present", "atm"]),
            "device": {"is_new": rng.random() < 0.5},
            "scores": {"fraud": rng.random()},
        }
        for _ in range(600)
    ]
    try:
        results = engine.evaluate("transaction", facts)
    finally:
        engine.close()
    for fact, result in zip(facts, results, strict=True):
        expected = _expected(fact)
        if not expected:
            assert result.decision == "approve"
            continue
        assert result.decision == f"band_{expected[0]}"
        if mode == "stop":
            assert result.rules_fired == (f"over_{expected[0]}",)
        else:
            assert result.rules_fired == tuple(f"over_{i}" for i in expected)
