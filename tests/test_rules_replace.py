"""Hot reload through RulesEngine.replace(): registrations are shared and freed, not leaked."""

from __future__ import annotations

import os
from typing import Any

import pytest

from app.errors import ConfigError
from app.rules.language.spec import AllOf, Compare, Rule, RuleSet, SourceRef
from app.rules.runtime.engine import RulesEngine
from app.rules.runtime.host import registered_count, shared_host


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _ruleset(threshold: int, *, mode: str = "stop") -> RuleSet:
    rules = (
        Rule("big", Compare("amount", "gt", threshold), "review", "Big.", SourceRef("t", 1)),
        Rule(
            "odd",
            AllOf((Compare("channel", "eq", "web"), Compare("merchant", "matches", "^shop"))),
            "hold",
            "Odd.",
            SourceRef("t", 2),
        ),
    )
    return RuleSet(
        "transaction",
        rules,
        "approve",
        "ok",
        f"v{threshold}{mode}",
        ("t",),
        mode=mode,  # type: ignore[arg-type]
    )


def test_replacing_with_identical_content_reuses_the_registration() -> None:
    """Switching between two versions 2,000 times keeps exactly two registrations."""
    before = registered_count()
    a, b = _ruleset(10), _ruleset(20)
    engine = RulesEngine({"transaction": a})
    other = RulesEngine({"transaction": b})  # another engine keeps b registered
    for i in range(2000):
        engine.replace({"transaction": b if i % 2 == 0 else a})
        assert [r.decision for r in engine.evaluate("transaction", [{"amount": 15}])] == [
            "approve" if i % 2 == 0 else "review"
        ]
    assert registered_count() == before + 2
    engine.close()
    other.close()
    assert registered_count() == before


def test_two_thousand_new_rulesets_keep_memory_flat() -> None:
    """2,000 replaces with always-new rules (stop and collect) delete the old ones."""
    before = registered_count()
    engine = RulesEngine({"transaction": _ruleset(0)})
    facts = [{"amount": 5, "channel": "web", "merchant": "shop"}, {"amount": -1}]
    for i in range(1, 200):
        engine.replace({"transaction": _ruleset(i, mode="collect" if i % 2 else "stop")})
        engine.evaluate("transaction", facts)
    baseline = _rss_mb()
    for i in range(200, 2200):
        engine.replace({"transaction": _ruleset(i, mode="collect" if i % 2 else "stop")})
        results = engine.evaluate("transaction", facts)
        assert results[1].decision == "approve"
    grown = _rss_mb() - baseline
    assert registered_count() == before + 1
    # Without deleting, 2,000 registrations with a used session hold ~300 MB.
    assert grown < 30, f"RSS grew {grown:.1f} MB over 2,000 replaces"
    engine.close()
    assert registered_count() == before


def test_a_failed_replace_keeps_the_old_rules_and_leaks_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If one ruleset is refused, the rules in service stay and nothing new stays registered."""
    engine = RulesEngine({"transaction": _ruleset(10)})
    before = registered_count()
    host = shared_host()
    real = host.set_rulesets

    def refuse_orders(definitions: dict[str, Any]) -> None:
        if any(name.startswith("order_") for name in definitions):
            raise ValueError("refused for the test")
        real(definitions)

    monkeypatch.setattr(host, "set_rulesets", refuse_orders)
    order = RuleSet(
        "order",
        (Rule("x", Compare("total", "gt", 1), "hold", "x", SourceRef("t", 1)),),
        "accept",
        "ok",
        "v",
        ("t",),
    )
    with pytest.raises(ConfigError, match="durable_rules refused the order ruleset"):
        engine.replace({"transaction": _ruleset(11), "order": order})
    assert engine.rulesets["transaction"].version == "v10stop"
    assert registered_count() == before
    assert [r.decision for r in engine.evaluate("transaction", [{"amount": 15}])] == ["review"]
    engine.close()
