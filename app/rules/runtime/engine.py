"""Run checked rulesets on batches of facts with durable_rules: the rules stage of the flow.

``RulesEngine.evaluate(event_type, facts)`` returns one ``RuleResult`` per fact, in order.
In ``stop`` mode the first rule (by priority, then file order) whose condition holds
decides; in ``collect`` mode every matching rule fires and contributes its actions, and
the highest-priority one with a decision decides. No match → the ruleset's default.
It is synchronous and meant to be called with whole batches from one worker thread.

How durable_rules 2.0.28 is driven, and why (the durable behaviour behind each point is
in ``docs/dependencies.md``, durable_rules; the Host and the registrations it shares
across engines are in ``app.rules.runtime.host``):

- ``stop`` mode posts each fact as an *event*: durable fires one action per post (the
  lowest ``pri``), which is the first-match semantics. ``collect`` mode asserts it as a
  *fact*: durable then fires every matching rule in ``pri`` order within the call, and
  the fact is retracted at once, so no facts pile up. ``MessageNotHandledException``
  means no rule matched → the default.
- Every message goes to the default session with a process-unique ``id`` (a redelivered
  event is evaluated again) and only the keys its ruleset reads
  (``app.rules.runtime.facts``). Single-message rules, no joins: the pattern that stays
  flat in memory.
- An error durable reports in the returned state raises ``RulesEngineError``.
- ``replace`` (hot reload) swaps every ruleset at once: if one is refused, none change.
- Rulesets are registered in chunks of ``CHUNK_RULES`` rules: durable's C evaluator runs
  out of stack on some events once one ruleset holds a few hundred rules.

Throughput is measured by ``bench/rules.py`` (generated rules) and recorded in
``bench/RESULTS.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from durable.engine import MessageNotHandledException

from app.errors import ArbiterError, ConfigError
from app.rules.language.reasons import Template, parse_template, render
from app.rules.language.spec import Rule, RuleSet
from app.rules.runtime.compile import to_durable
from app.rules.runtime.facts import FactPlan, build_message, fact_plan, lookup, number_at
from app.rules.runtime.host import LOCK, MESSAGE_IDS, SyncHost, acquire, release, shared_host
from app.rules.runtime.result import RuleResult, merge_actions


class RulesEngineError(ArbiterError):
    """durable_rules reported an error while evaluating: a bug, not a bad event or rule.

    Do not retry the batch as if it were transient; report it with the ruleset version.
    """


# Rules per durable ruleset. 100-rule rulesets ran clean in bench/rules.py; 500 did not.
CHUNK_RULES = 50


@dataclass(frozen=True)
class _Registered:
    """A ruleset as it runs: its durable name, how to build messages, its rules by name."""

    ruleset: RuleSet
    # One durable ruleset per chunk of at most CHUNK_RULES rules, in priority order;
    # empty when the ruleset has no rules (default only).
    durable_names: tuple[str, ...]
    plan: FactPlan
    rules: Mapping[str, Rule]
    templates: Mapping[str, Template]
    default_template: Template
    default: RuleResult
    collect: bool = field(default=False)


def _register(ruleset: RuleSet) -> _Registered:
    """Lock held. Registers the rules in chunks: durable's C engine runs out of its
    fixed evaluation stack (error 303, ERR_MAX_STACK_SIZE) on some events once one
    ruleset holds several hundred rules (bench/rules.py found it at 500)."""
    names: list[str] = []
    context = (
        f"{ruleset.event_type} ruleset (version {ruleset.version}, "
        f"files {', '.join(ruleset.files)})"
    )
    try:
        for start in range(0, len(ruleset.rules), CHUNK_RULES):
            part = slice(start, start + CHUNK_RULES)
            body = to_durable(ruleset, "_", part=part)["_"]
            names.append(acquire(ruleset.event_type, body, context))
    except BaseException:
        for name in names:
            release(name)
        raise
    reasons = (ruleset.default_reason,)
    return _Registered(
        ruleset=ruleset,
        durable_names=tuple(names),
        plan=fact_plan(ruleset),
        rules={rule.name: rule for rule in ruleset.rules},
        templates={rule.name: parse_template(rule.reason) for rule in ruleset.rules},
        default_template=parse_template(ruleset.default_reason),
        default=RuleResult(
            ruleset.default_decision,
            None,
            ruleset.default_reason,
            reasons=reasons,
            ruleset_version=ruleset.version,
        ),
        collect=ruleset.mode == "collect",
    )


class RulesEngine:
    """Evaluates facts against the rulesets it holds; ``replace`` swaps them atomically.

    ``close()`` gives its durable registrations back (the process-wide Host stays).
    """

    def __init__(self, rulesets: Mapping[str, RuleSet]) -> None:
        self._active: dict[str, _Registered] = {}
        self.replace(rulesets)

    @property
    def rulesets(self) -> dict[str, RuleSet]:
        """The rulesets in service, by event type."""
        return {t: r.ruleset for t, r in self._active.items()}

    def replace(self, rulesets: Mapping[str, RuleSet]) -> None:
        """Put ``rulesets`` into service; if any fails to register, none do. Unchanged
        rulesets reuse their registration; ones no engine uses any more are deleted."""
        with LOCK:
            registered: dict[str, _Registered] = {}
            try:
                for event_type, ruleset in rulesets.items():
                    registered[event_type] = _register(ruleset)
            except BaseException:
                self._release_all(registered)
                raise
            old, self._active = self._active, registered
            self._release_all(old)

    def close(self) -> None:
        """Stop using every ruleset; evaluate() then knows no event type."""
        with LOCK:
            old, self._active = self._active, {}
            self._release_all(old)

    @staticmethod
    def _release_all(registered: Mapping[str, _Registered]) -> None:
        for item in registered.values():
            for name in item.durable_names:
                release(name)

    def evaluate(self, event_type: str, facts: Sequence[Mapping[str, Any]]) -> list[RuleResult]:
        """One result per fact, same order. A fact is ``{**event_json, "scores": {...}}``
        plus ``"windows": {name: number}`` when the ruleset declares windows."""
        with LOCK:
            active = self._active.get(event_type)
            if active is None:
                known = ", ".join(sorted(self._active)) or "none"
                raise ConfigError(
                    f"no rules loaded for event type '{event_type}' (loaded: {known}) — "
                    f"add a rule file with 'ruleset: {event_type}' and reload"
                )
            if not active.durable_names:
                return [self._default(active, fact) for fact in facts]
            return [self._evaluate_one(active, fact) for fact in facts]

    def _evaluate_one(self, active: _Registered, fact: Mapping[str, Any]) -> RuleResult:
        message = build_message(fact, active.plan)
        fired: list[str] = []
        # Chunks hold rules in priority order: in stop mode the first chunk that fires
        # has the first matching rule; in collect mode every chunk contributes.
        for name in active.durable_names:
            fired.extend(self._fire(active, name, dict(message)))
            if fired and not active.collect:
                break
        if not fired:
            return self._default(active, fact)
        rules = [active.rules[n] for n in fired]
        reasons = tuple(self._render(active, active.templates[r.name], fact) for r in rules)
        deciding = next((i for i, r in enumerate(rules) if r.decision is not None), None)
        if deciding is None:
            default = self._default(active, fact)
            decision, rule_name, reason = default.decision, None, default.reason
        else:
            rule = rules[deciding]
            assert rule.decision is not None
            decision, rule_name, reason = rule.decision, rule.name, reasons[deciding]
        return RuleResult(
            decision,
            rule_name,
            reason,
            rules_fired=tuple(fired),
            reasons=reasons,
            actions=merge_actions(rules),
            ruleset_version=active.ruleset.version,
        )

    @staticmethod
    def _fire(active: _Registered, name: str, message: dict[str, Any]) -> list[str]:
        """The rules durable fired for ``message``, in firing order. Lock held."""
        host = shared_host()
        host.fired = []
        message["id"] = next(MESSAGE_IDS)
        try:
            return RulesEngine._fire_checked(active, name, message, host)
        except (RulesEngineError, MessageNotHandledException):
            raise
        except Exception as exc:  # durable's C engine raises its own bare error type
            raise RulesEngineError(
                f"durable_rules could not evaluate a {active.ruleset.event_type} fact "
                f"(ruleset version {active.ruleset.version}): {exc}"
            ) from exc

    @staticmethod
    def _fire_checked(
        active: _Registered, name: str, message: dict[str, Any], host: SyncHost
    ) -> list[str]:
        try:
            if active.collect:
                try:
                    state = host.assert_fact(name, message)
                finally:
                    with contextlib.suppress(MessageNotHandledException):
                        host.retract_fact(name, message)
            else:
                state = host.post(name, message)
        except MessageNotHandledException:
            return []
        if isinstance(state, dict) and state.get("exception"):
            raise RulesEngineError(
                f"durable_rules failed evaluating the {active.ruleset.event_type} ruleset "
                f"(version {active.ruleset.version}): {state['exception']}"
            )
        # A rule whose `any` holds through several branches fires once per branch in
        # collect mode (durable splits `$or` into alternatives): count each rule once.
        fired = list(dict.fromkeys(host.fired))
        unknown = [n for n in fired if n not in active.rules]
        if not fired or unknown or (len(fired) > 1 and not active.collect):
            raise RulesEngineError(
                f"durable_rules accepted a {active.ruleset.event_type} fact but the rules "
                f"that fired make no sense (got {fired!r}; version "
                f"{active.ruleset.version}) — report this bug"
            )
        return fired

    def _default(self, active: _Registered, fact: Mapping[str, Any]) -> RuleResult:
        if not active.default_template.placeholders:
            return active.default
        reason = self._render(active, active.default_template, fact)
        return RuleResult(
            active.default.decision,
            None,
            reason,
            reasons=(reason,),
            ruleset_version=active.ruleset.version,
        )

    @staticmethod
    def _render(active: _Registered, template: Template, fact: Mapping[str, Any]) -> str:
        if not template.placeholders:
            return "".join(p for p in template.parts if isinstance(p, str))
        numeric = active.ruleset.numeric_paths

        def value_of(path: str) -> Any:
            return number_at(fact, path) if path in numeric else lookup(fact, path)

        return render(template, value_of)
