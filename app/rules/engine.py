"""Run checked rulesets on batches of facts with durable_rules: the rules stage of the flow.

``RulesEngine.evaluate(event_type, facts)`` returns one ``RuleResult`` per fact, in order.
In ``stop`` mode the first rule (by priority, then file order) whose condition holds
decides; in ``collect`` mode every matching rule fires and contributes its actions, and
the highest-priority one with a decision decides. No match → the ruleset's default.
It is synchronous and meant to be called with whole batches from one worker thread.

How durable_rules 2.0.28 is driven, and why (see STACK-NOTES):

- One ``Host`` for the whole process, shared by every ``RulesEngine``. Its timer
  threads are switched off (``_run`` is a no-op): ``post`` already runs the action in
  the caller's thread, and the background dispatcher could otherwise take the action
  of a message we are posting.
- ``stop`` mode posts each fact as an *event*: durable fires one action per post — the
  lowest ``pri`` — which is the first-match semantics. ``collect`` mode asserts it as a
  *fact*: durable then fires every matching rule in ``pri`` order within the call, and
  the fact is retracted at once (measured: 50,000 assert+retract pairs, memory flat,
  no facts left). ``MessageNotHandledException`` means no rule matched → the default.
- Every message goes to the default session with a process-unique ``id`` (a redelivered
  event is evaluated again) and only the keys its ruleset reads. Single-message rules,
  no joins: the pattern that stays flat in memory.
- durable swallows action errors into ``state["exception"]`` and keeps it there for
  every later post; our action cannot fail, clears a stale one, and ``evaluate`` raises
  if one shows up anyway.

Registrations and hot reload (``replace``). durable refuses a ruleset name twice and
cannot change a registered ruleset. Measured on 2.0.28: there is no handle-table limit
in practice (100,000 ``create_ruleset`` calls succeeded; handles are never reused), but
every registered ruleset keeps ~64 KB of C memory and its default session another
~95 KB once a message was posted — 2,000 reloads without cleanup would hold ~300 MB.
``delete_ruleset`` alone frees the ruleset but leaks the session; ``delete_state`` on
the default session first, then ``delete_ruleset``, frees both (6,000 register/post/
delete cycles: RSS flat within 3 MB). So registrations are shared by content: the key is
a hash of the compiled durable definition, so reloading unchanged rules (or switching
back to an earlier version) reuses the registration; each is reference-counted across
engines and deleted — state first — when the last engine stops using it. Deleting only
ever happens under the lock that every post holds, never while a post is running.
``delete_state`` is safe here because these rulesets have no joins: the segfault in
STACK-NOTES needs a pending partial-join event.

Throughput (2-core dev box, Python 3.11, the shipped rules, one ``evaluate`` call with a
batch of 1,000 simulator events, flattening, helper keys, posting and reason rendering
included, best of 5): ~28,500 events/s for ``transaction`` and ``order`` (stop mode) and
~20,000 for ``ticket`` (collect mode: assert + retract and up to 4 actions per event).
The first version (stop only, no helpers or reasons) ran 32-42k/s.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import durable_rules_engine  # type: ignore[import-not-found]  # durable's C module, untyped
from durable.engine import Host, MessageNotHandledException

from app.errors import ArbiterError, ConfigError
from app.rules.compile import FactPlan, build_message, fact_plan, lookup, number_at, to_durable
from app.rules.reasons import Template, parse_template, render
from app.rules.spec import Publish, Rule, RuleSet, SetValues, Tag, Webhook, canonical_action


class RulesEngineError(ArbiterError):
    """durable_rules reported an error while evaluating: a bug, not a bad event or rule.

    Do not retry the batch as if it were transient; report it with the ruleset version.
    """


@dataclass(frozen=True)
class RuleResult:
    """The outcome for one fact.

    ``decision``/``rule``/``reason``: what decided (``rule`` None = the default) and its
    interpolated reason. ``rules_fired``: every rule that fired, in priority order (one in
    stop mode). ``reasons``: their reasons, same order (the default's when none fired).
    ``actions``: ``{"type": "publish", "topic": t}``, ``{"type": "webhook", "name": n}``,
    ``{"type": "set", "values": {...}}``, ``{"type": "tag", "tags": [...]}`` in firing
    order, publish/webhook de-duplicated, all sets merged into one entry (the higher
    priority wins per key) and all tags into one. ``ruleset_version``: what decided it.
    """

    decision: str
    rule: str | None
    reason: str
    rules_fired: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    actions: tuple[Mapping[str, Any], ...] = ()
    ruleset_version: str = ""


class _SyncHost(Host):  # type: ignore[misc]  # durable ships no type information
    """A durable Host without background threads whose actions record the rules that fired."""

    def __init__(self) -> None:
        self.fired: list[str] = []
        super().__init__()

    def _run(self) -> None:
        # No dispatch/timer threads: actions run inside post(), in the caller's thread.
        return

    def get_action(self, action_name: str) -> Callable[[Any], None]:
        def action(closure: Any) -> None:
            self.fired.append(action_name)
            # A stale exception would otherwise be reported by every later post.
            closure.s._d.pop("exception", None)

        return action

    def unregister(self, name: str) -> None:
        """Forget a ruleset and free its C memory: default session first, then the ruleset.

        durable's ``createStateNode`` leaves the session's action context uninitialised
        and ``deleteStateNode`` frees it: deleting a session in which no action ever ran
        frees a garbage pointer (the segfault in STACK-NOTES). Posting the sweep message
        first runs the sweep rule's action on the default session, which sets that
        context, so the delete is safe; it also creates the session if none existed.
        """
        self.post(name, {"id": next(_MESSAGE_IDS), SWEEP_KEY: True})
        self.fired.clear()
        ruleset = self._ruleset_directory.pop(name)
        self._ruleset_list.remove(ruleset)
        durable_rules_engine.delete_state(ruleset._handle, None)
        durable_rules_engine.delete_ruleset(ruleset._handle)


# A rule every registration carries, fired only by ``unregister`` (no fact has the key).
SWEEP_KEY = "__arbiter_sweep"
_SWEEP_RULE: dict[str, Any] = {
    "all": [{"m": {"$eq": {SWEEP_KEY: True}}}],
    "pri": 2**31 - 1,
    "run": SWEEP_KEY,
}

_HOST: _SyncHost | None = None
# Guards the shared Host and the registrations: register/delete, and every post.
# Rules per durable ruleset. 100-rule rulesets ran clean in bench/rules.py; 500 did not.
CHUNK_RULES = 50
_HOST_LOCK = threading.Lock()
_MESSAGE_IDS = itertools.count(1)
_RULESET_NUMBERS = itertools.count(1)


def _host() -> _SyncHost:
    global _HOST  # noqa: PLW0603 - one Host per process is the point
    if _HOST is None:
        _HOST = _SyncHost()
    return _HOST


@dataclass
class _Registration:
    name: str
    users: int


# Compiled-definition hash -> its registration; shared by every engine in the process.
_REGISTRATIONS: dict[str, _Registration] = {}


def registered_count() -> int:
    """How many rulesets durable holds for Arbiter right now (for tests and metrics)."""
    with _HOST_LOCK:
        return len(_REGISTRATIONS)


def _acquire(event_type: str, body: Mapping[str, Any], context: str) -> str:
    """The durable name of a registration of ``body`` (new or shared). Lock held."""
    digest = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
    ).hexdigest()
    existing = _REGISTRATIONS.get(digest)
    if existing is not None:
        existing.users += 1
        return existing.name
    name = f"{event_type}_{digest[:12]}_{next(_RULESET_NUMBERS)}"
    try:
        # set_rulesets mutates the definition it is given; hand it a private copy.
        _host().set_rulesets({name: copy.deepcopy({**body, SWEEP_KEY: _SWEEP_RULE})})
    except Exception as exc:
        raise ConfigError(
            f"durable_rules refused the {context}: {exc} "
            "— the rules in service are unchanged; simplify the rule it names"
        ) from exc
    _REGISTRATIONS[digest] = _Registration(name, 1)
    return name


def _release(name: str) -> None:
    """Drop one user of a registration; delete it from durable with the last. Lock held."""
    for digest, registration in _REGISTRATIONS.items():
        if registration.name == name:
            registration.users -= 1
            if registration.users <= 0:
                del _REGISTRATIONS[digest]
                _host().unregister(name)
            return


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
            names.append(_acquire(ruleset.event_type, body, context))
    except BaseException:
        for name in names:
            _release(name)
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


def merge_actions(rules: Sequence[Rule]) -> tuple[Mapping[str, Any], ...]:
    """The actions of ``rules`` (in firing order) as a result carries them: publish and
    webhook once each, all ``set`` values in one entry (the first rule to set a key
    wins), all tags in one entry; each merged entry sits where its kind first appeared."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    values: dict[str, Any] | None = None
    tags: list[str] | None = None
    for rule in rules:
        for action in rule.actions:
            if isinstance(action, Publish | Webhook):
                entry = canonical_action(action)
                key = (entry["type"], action.topic if isinstance(action, Publish) else action.name)
                if key not in seen:
                    seen.add(key)
                    out.append(entry)
            elif isinstance(action, SetValues):
                if values is None:
                    values = {}
                    out.append({"type": "set", "values": values})
                for name, value in action.values:
                    values.setdefault(name, value)
            elif isinstance(action, Tag):
                if tags is None:
                    tags = []
                    out.append({"type": "tag", "tags": tags})
                tags.extend(t for t in action.tags if t not in tags)
    return tuple(out)


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
        with _HOST_LOCK:
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
        with _HOST_LOCK:
            old, self._active = self._active, {}
            self._release_all(old)

    @staticmethod
    def _release_all(registered: Mapping[str, _Registered]) -> None:
        for item in registered.values():
            for name in item.durable_names:
                _release(name)

    def evaluate(self, event_type: str, facts: Sequence[Mapping[str, Any]]) -> list[RuleResult]:
        """One result per fact, same order. A fact is ``{**event_json, "scores": {...}}``
        plus ``"windows": {name: number}`` when the ruleset declares windows."""
        with _HOST_LOCK:
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
        host = _host()
        host.fired = []
        message["id"] = next(_MESSAGE_IDS)
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
        active: _Registered, name: str, message: dict[str, Any], host: _SyncHost
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
